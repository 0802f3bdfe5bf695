"""Preconditioned momentum (design §2.4, Eqs. 46–47) and its diagonal preconditioner.

NL writes the momentum memory in the update's sign with the step size inside,

    m_{i+1} = β m_i − η P_i ∇L(W_i),     W_{i+1} = W_i + m_{i+1}.          # NL Eq. 47

hope_jax transforms follow optax's convention instead: they output a descent *direction* `s`
(same sign as the gradient) and the learning rate is applied last by `scale_by_learning_rate`:

    s_{i+1} = β s_i + P_i g_i,           W_{i+1} = W_i − η s_{i+1}.

With a constant η the two are identical (`m = −η s`); with a schedule η_t multiplies the whole
output at the global step (Muon's placement, design §2.7). See docs/optimizers.md.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim._util import with_learning_rate
from hope_jax.optim.preconditioners import resolve_preconditioner


class PreconditionedMomentumState(NamedTuple):
    """State of `scale_by_preconditioned_momentum`."""

    momentum: optax.Updates  # s, shaped like the params
    preconditioner: optax.OptState  # state of the transform computing P g


def scale_by_preconditioned_momentum(
    beta: float = 0.9,
    preconditioner: optax.GradientTransformation | str | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Momentum on preconditioned gradients, `s ← β s + P g` (NL Eq. 47, descent direction).

    Args:
      beta: momentum decay β (NL calls it α in Eqs. 33–52).
      preconditioner: None/"identity" (`P = I`: plain momentum, `optax.trace`), "diagonal"
        (`P = 1/(√v̂ + ε)`), or any transform mapping `g ↦ P g`.
      nesterov: output `β s_{i+1} + P g_i` instead of `s_{i+1}`.

    Returns:
      A transform whose output is `s_{i+1}`; chain `scale_by_learning_rate` after it.
    """
    precondition = resolve_preconditioner(preconditioner)

    def init_fn(params: optax.Params) -> PreconditionedMomentumState:
        return PreconditionedMomentumState(
            momentum=jax.tree.map(jnp.zeros_like, params), preconditioner=precondition.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        pg, p_state = precondition.update(updates, state.preconditioner, params, **extra_args)
        # NL Eq. 47: m ← β m − η P g, written for s = −m/η.
        momentum = jax.tree.map(lambda s, x: beta * s + x, state.momentum, pg)
        if nesterov:
            out = jax.tree.map(lambda s, x: beta * s + x, momentum, pg)
        else:
            out = momentum
        return out, PreconditionedMomentumState(momentum=momentum, preconditioner=p_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def preconditioned_momentum(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    preconditioner: optax.GradientTransformation | str | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Complete optimizer: `W ← W − η (s + λ W)`, `s ← β s + P g` (NL Eq. 47).

    With `preconditioner=None` this is `optax.sgd(learning_rate, momentum=beta)`.
    """
    return with_learning_rate(
        scale_by_preconditioned_momentum(beta, preconditioner, nesterov),
        learning_rate,
        weight_decay,
    )
