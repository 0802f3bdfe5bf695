"""Inner objectives ("attentional biases") of a level: what a memory fits, `ℓ(M; k, v)`.

An objective sees the memory only through its prediction `y = M(k)`, so it is given by a per-token
loss `ℓ(y, v)` and its output error `e = ∂ℓ/∂y`. Every layer gradient of an MLP memory is then an
outer product built from `e` (design §3.1), which the chunked scan exploits.

* `l2()`: `ℓ = ½‖y − v‖²` summed over features (D16), `e = y − v` (delta rule, design §1.7).
* `dot_product()`: `ℓ = −⟨y, v⟩` (Hebbian), `e = −v`, independent of the state (design §1.7, Eq. 92
  with the sign fixed as in D4).
* `custom(loss)`: any differentiable `ℓ(y, v)`; `e` comes from autodiff.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Objective(NamedTuple):
    """A per-token inner objective.

    Attributes:
      name: short name used in reprs and docs.
      loss: `ℓ(y [d_out], v [d_out]) -> []` for one token.
      error: `∂ℓ/∂y`, vectorised over leading dims:
        `(y [..., d_out], v [..., d_out]) -> [..., d_out]`.
      affine: c when the error is affine in the prediction, `e = c·y − v` (l2: 1, dot: 0), else
        None. A linear memory with an affine objective has affine chunk transitions, which the
        linear fast path (`linear_chunk.py`) exploits.
    """

    name: str
    loss: Callable[[Array, Array], Array]
    error: Callable[[Array, Array], Array]
    affine: float | None = None


def l2() -> Objective:
    """`ℓ(y, v) = ½‖y − v‖²` (D16): the regression objective of Titans and Hope (Eq. 93)."""
    return Objective(
        name="l2",
        loss=lambda y, v: 0.5 * jnp.sum(jnp.square(y - v)),
        error=lambda y, v: y - v,
        affine=1.0,
    )


def dot_product() -> Objective:
    """`ℓ(y, v) = −⟨y, v⟩` (Hebbian): the objective of linear attention (design §4, Eq. 92)."""
    return Objective(
        name="dot",
        loss=lambda y, v: -jnp.sum(y * v),
        error=lambda y, v: -jnp.broadcast_to(v, y.shape),
        affine=0.0,
    )


def custom(loss: Callable[[Array, Array], Array], name: str = "custom") -> Objective:
    """An objective from any differentiable per-token loss `ℓ(y [d], v [d]) -> []`."""
    grad_y = jax.grad(loss, argnums=0)

    def error(y: Array, v: Array) -> Array:
        lead = y.shape[:-1]
        flat = jax.vmap(grad_y)(y.reshape(-1, y.shape[-1]),
                                jnp.broadcast_to(v, y.shape).reshape(-1, y.shape[-1]))
        return flat.reshape(*lead, y.shape[-1])

    return Objective(name=name, loss=loss, error=error)


def by_name(name: str) -> Objective:
    """`"l2"` or `"dot"` → the objective; anything else raises ValueError."""
    table = {"l2": l2, "dot": dot_product}
    if name not in table:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(table)}")
    return table[name]()
