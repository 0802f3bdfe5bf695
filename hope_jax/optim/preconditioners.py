"""Preconditioners `P` for the momenta of design §2.4–2.5: any transform mapping `g ↦ P g`.

NL Eq. 47 gives the momentum memory the value `P_i ∇L`; `P` is pluggable: the identity, a diagonal
`1/(√v̂ + ε)` from a second-moment estimate (Adam's denominator), or a Shampoo-like factor (any
optax transform computing `P g`, e.g. from optax.contrib).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim._util import bias_correction


class DiagonalPreconditionerState(NamedTuple):
    """State of `scale_by_diagonal_preconditioner`."""

    count: jax.Array  # int32 scalar: number of updates so far
    nu: optax.Updates  # EMA of g², shaped like the params


def scale_by_diagonal_preconditioner(
    b2: float = 0.999,
    eps: float = 1e-8,
    bias_correct: bool = True,
) -> optax.GradientTransformation:
    """`P g = g / (√v̂ + ε)` with `v ← b2 v + (1 − b2) g²` (design §2.4, diagonal P; Adam's
    denominator).

    Args:
      b2: decay of the second-moment EMA.
      eps: added to `√v̂`.
      bias_correct: divide `v` by `1 − b2^t` (v̂); False uses `v` as is.
    """

    def init_fn(params: optax.Params) -> DiagonalPreconditionerState:
        return DiagonalPreconditionerState(
            count=jnp.zeros([], jnp.int32), nu=jax.tree.map(jnp.zeros_like, params)
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_int32_increment(state.count)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        nu_hat = jax.tree.map(lambda v: bias_correction(v, b2, count), nu) if bias_correct else nu
        preconditioned = jax.tree.map(lambda g, v: g / (jnp.sqrt(v) + eps), updates, nu_hat)
        return preconditioned, DiagonalPreconditionerState(count=count, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def resolve_preconditioner(
    preconditioner: optax.GradientTransformation | str | None,
) -> optax.GradientTransformationExtraArgs:
    """Maps the `preconditioner` argument of the momenta to a transform computing `P g`.

    None / "identity": `P = I`. "diagonal": `P = 1/(√v̂ + ε)` with default constants
    (`scale_by_diagonal_preconditioner()`); pass that transform yourself to change them. Any other
    `optax.GradientTransformation` mapping `g ↦ P g` is used as given (design §2.4: P is pluggable).
    """
    if preconditioner is None or preconditioner == "identity":
        transform = optax.identity()
    elif preconditioner == "diagonal":
        transform = scale_by_diagonal_preconditioner()
    elif isinstance(preconditioner, str):
        raise ValueError(f"unknown preconditioner {preconditioner!r}: use 'identity', 'diagonal' "
                         f"or a transform")
    else:
        transform = preconditioner
    return optax.with_extra_args_support(transform)
