"""Delta momentum (design §2.5, Eqs. 48–49) in the normalised form of D27.

NL Eq. 49 fits the momentum with an L2 objective, `m ← m (β I − g gᵀ) − η P g`; the printed
`g gᵀ` is unbounded in the gradient's scale, so hope_jax uses (D27)

    m_{i+1} = β m_i − γ ⟨m_i, ĝ_i⟩ ĝ_i − η P_i g_i,     ĝ = g / (‖g‖ + ε),

each parameter tensor flattened to one vector (`form="flat"`, default), or for matrix leaves
`m (β I − γ Ĝᵀ Ĝ)` with `Ĝ = G/(‖G‖_F + ε)` (`form="matrix"`). As everywhere in hope_jax.optim,
the transform outputs the descent direction `s = −m/η`, for which the recurrence reads
`s ← β s − γ⟨s, ĝ⟩ĝ + P g` (the delta term is linear in `m`, so this is exact for constant η).
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim._util import with_learning_rate
from hope_jax.optim.preconditioners import resolve_preconditioner

DeltaForm = Literal["flat", "matrix"]


class DeltaMomentumState(NamedTuple):
    """State of `scale_by_delta_momentum`."""

    momentum: optax.Updates  # s, shaped like the params
    preconditioner: optax.OptState  # state of the transform computing P g


def delta_decay_flat(s: jax.Array, g: jax.Array, beta, gamma, eps) -> jax.Array:
    """`β s − γ ⟨s, ĝ⟩ ĝ` with `ĝ = g/(‖g‖ + ε)`, the tensor flattened to one vector (D27)."""
    g_hat = g / (jnp.sqrt(jnp.sum(g * g)) + eps)
    return beta * s - gamma * jnp.sum(s * g_hat) * g_hat


def delta_decay_matrix(s: jax.Array, g: jax.Array, beta, gamma, eps) -> jax.Array:
    """`s (β I − γ Ĝᵀ Ĝ)` with `Ĝ = G/(‖G‖_F + ε)` over the last two axes (leading axes: a stack).

    Vectors and scalars fall back to the flat form, which equals the matrix form of a 1×n row.
    """
    if s.ndim < 2:
        return delta_decay_flat(s, g, beta, gamma, eps)
    norm = jnp.sqrt(jnp.sum(g * g, axis=(-2, -1), keepdims=True))
    g_hat = g / (norm + eps)
    # s Ĝᵀ Ĝ computed as (s Ĝᵀ) Ĝ: (…, r, r) then (…, r, c).
    s_gt = jnp.matmul(s, jnp.swapaxes(g_hat, -1, -2))
    return beta * s - gamma * jnp.matmul(s_gt, g_hat)


def scale_by_delta_momentum(
    beta: float = 0.9,
    gamma: float = 1.0,
    eps: float = 1e-8,
    preconditioner: optax.GradientTransformation | str | None = None,
    form: DeltaForm = "flat",
) -> optax.GradientTransformationExtraArgs:
    """Delta momentum `s ← β s − γ ⟨s, ĝ⟩ ĝ + P g` (NL Eq. 49 with D27's normalisation).

    Args:
      beta: momentum decay β.
      gamma: strength γ ∈ [0, 1] of the gradient-dependent decay; γ = 0 is preconditioned momentum.
      eps: ε in `ĝ = g/(‖g‖ + ε)`.
      preconditioner: P, as in `scale_by_preconditioned_momentum` (ĝ uses the raw gradient).
      form: "flat" (each tensor one vector) or "matrix" (`s (βI − γ ĜᵀĜ)` on leaves of rank ≥ 2).
    """
    if form not in ("flat", "matrix"):
        raise ValueError(f"form must be 'flat' or 'matrix', got {form!r}")
    decay = delta_decay_flat if form == "flat" else delta_decay_matrix
    precondition = resolve_preconditioner(preconditioner)

    def init_fn(params: optax.Params) -> DeltaMomentumState:
        return DeltaMomentumState(
            momentum=jax.tree.map(jnp.zeros_like, params), preconditioner=precondition.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        pg, p_state = precondition.update(updates, state.preconditioner, params, **extra_args)
        # NL Eq. 49 (D27): m ← β m − γ⟨m, ĝ⟩ĝ − η P g, written for s = −m/η.
        momentum = jax.tree.map(
            lambda s, g, x: decay(s, g, beta, gamma, eps) + x, state.momentum, updates, pg
        )
        return momentum, DeltaMomentumState(momentum=momentum, preconditioner=p_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def delta_momentum(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    gamma: float = 1.0,
    eps: float = 1e-8,
    preconditioner: optax.GradientTransformation | str | None = None,
    form: DeltaForm = "flat",
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Complete optimizer: `W ← W − η (s + λW)` with delta momentum `s` (NL Eq. 49, D27)."""
    return with_learning_rate(
        scale_by_delta_momentum(beta, gamma, eps, preconditioner, form), learning_rate, weight_decay
    )
