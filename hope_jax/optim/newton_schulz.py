"""Newton–Schulz orthogonalisation as a nonlinear output on any momentum (design §2.7, Eqs. 42–44,
52; D29).

    X₀ = X / (‖X‖_F + ε)                                   (transpose first if rows > cols)
    X_{j+1} = a X_j + b (X_j X_jᵀ) X_j + c (X_j X_jᵀ)² X_j,   j = 0..T−1

Default `(a, b, c) = (3.4445, −4.7750, 2.0315)` (Muon's quintic), `T = 5`, computed in at least
fp32; option cubic `(1.5, −0.5, 0)`, which converges to the polar factor `U Vᵀ`. Leaves of rank 2
are matrices; leaves of rank > 2 are stacks of matrices over their last two axes (e.g. layers
stacked for `scan`). Vectors, scalars and, by default, leaves whose path names an embedding or the
LM head skip NS and pass through unchanged (D29).

`W ← W + σ(m)` with σ = NS is NL Eq. 52; with a linear momentum it is Muon (Eq. 42), with the
learning rate outside NS (design §2.7): see `hope_jax.optim.muon`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

QUINTIC: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)  # Muon's quintic (D29)
CUBIC: tuple[float, float, float] = (1.5, -0.5, 0.0)  # classical NS, converges to U Vᵀ
_PRESETS = {"quintic": QUINTIC, "cubic": CUBIC}

#: Path substrings (case-insensitive) of leaves that skip NS by default: embeddings and the
#: LM head (D29).
DEFAULT_NS_EXCLUDE: tuple[str, ...] = ("embed", "lm_head")

Coefficients = str | Sequence[float]
MaskOrFn = Any | Callable[[optax.Params], Any] | None


def resolve_coefficients(coefficients: Coefficients) -> tuple[float, float, float]:
    """Maps "quintic" / "cubic" or an `(a, b, c)` triple to the triple."""
    if isinstance(coefficients, str):
        if coefficients not in _PRESETS:
            raise ValueError(f"unknown NS coefficients {coefficients!r}: use 'quintic', 'cubic' "
                             f"or (a, b, c)")
        return _PRESETS[coefficients]
    a, b, c = coefficients
    return a, b, c


def newton_schulz(
    x: jax.Array,
    steps: int | jax.Array = 5,
    coefficients: Coefficients = "quintic",
    eps: float = 1e-7,
    dtype: str | jnp.dtype | None = None,
) -> jax.Array:
    """`NS_T(X)` of a matrix or a stack of matrices `x: (..., rows, cols)` (NL Eqs. 42–44; D29).

    Args:
      x: the matrix (or stack over leading axes) to orthogonalise.
      steps: T, the number of iterations (may be traced: runs in a `fori_loop`).
      coefficients: "quintic" (default), "cubic", or `(a, b, c)`.
      eps: ε in the Frobenius normalisation.
      dtype: compute dtype; None computes in `x`'s dtype promoted to at least float32 (D29: fp32;
        float64 inputs stay float64). "bfloat16" is the D29 option.

    Returns:
      An array of `x`'s shape and dtype.
    """
    if x.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix, got shape {x.shape}")
    a, b, c = resolve_coefficients(coefficients)
    compute = jnp.promote_types(x.dtype, jnp.float32) if dtype is None else jnp.dtype(dtype)
    X = x.astype(compute)
    transpose = x.shape[-2] > x.shape[-1]
    if transpose:  # iterate on the wide orientation: X Xᵀ is the smaller Gram matrix
        X = jnp.swapaxes(X, -1, -2)
    X = X / (jnp.sqrt(jnp.sum(X * X, axis=(-2, -1), keepdims=True)) + eps)
    skip_c = isinstance(c, (int, float)) and c == 0

    def mm(p, q):  # products accumulate in fp32 at least (fast bf16 path on CPU/TPU/GPU)
        acc = jnp.promote_types(compute, jnp.float32)
        return jnp.matmul(p, q, preferred_element_type=acc).astype(compute)

    def body(_, X):
        A = mm(X, jnp.swapaxes(X, -1, -2))  # X Xᵀ
        B = b * A if skip_c else b * A + c * mm(A, A)
        return a * X + mm(B, X)  # a X + b (XXᵀ) X + c (XXᵀ)² X

    X = jax.lax.fori_loop(0, steps, body, X)
    if transpose:
        X = jnp.swapaxes(X, -1, -2)
    return X.astype(x.dtype)


def matrix_mask(tree: optax.Params, exclude: Sequence[str] = DEFAULT_NS_EXCLUDE) -> Any:
    """Default NS mask: True for leaves of rank ≥ 2 whose path contains none of `exclude`."""
    excluded = tuple(e.lower() for e in exclude)

    def is_matrix(path, x) -> bool:
        name = jax.tree_util.keystr(path).lower()
        return jnp.ndim(x) >= 2 and not any(e in name for e in excluded)

    return jax.tree_util.tree_map_with_path(is_matrix, tree)


def resolve_mask(tree: optax.Params, mask: MaskOrFn, exclude: Sequence[str]) -> Any:
    """The NS mask for `tree`: `mask(tree)` if callable, `mask` if a pytree, else `matrix_mask`.

    Leaves of rank < 2 never get NS, whatever the mask says.
    """
    if mask is None:
        return matrix_mask(tree, exclude)
    resolved = mask(tree) if callable(mask) else mask
    return jax.tree.map(lambda x, m: bool(m) and jnp.ndim(x) >= 2, tree, resolved)


def shape_scale_factor(x: jax.Array) -> float:
    """Muon's optional shape scale `√max(1, rows/cols)` of the last two axes (design §2.7)."""
    rows, cols = x.shape[-2], x.shape[-1]
    return max(1.0, rows / cols) ** 0.5


def orthogonalize_tree(
    updates: optax.Updates,
    mask: Any,
    steps: int | jax.Array = 5,
    coefficients: Coefficients = "quintic",
    eps: float = 1e-7,
    shape_scale: bool = False,
    dtype: str | jnp.dtype | None = None,
) -> optax.Updates:
    """Applies `NS_T` to the leaves where `mask` is True; other leaves pass through unchanged."""

    def leaf(x, use_ns):
        if not use_ns:
            return x
        y = newton_schulz(x, steps, coefficients, eps, dtype)
        return y * shape_scale_factor(x) if shape_scale else y

    return jax.tree.map(leaf, updates, mask)


def scale_by_newton_schulz(
    steps: int = 5,
    coefficients: Coefficients = "quintic",
    eps: float = 1e-7,
    mask: MaskOrFn = None,
    exclude: Sequence[str] = DEFAULT_NS_EXCLUDE,
    shape_scale: bool = False,
    dtype: str | None = None,
) -> optax.GradientTransformation:
    """Stateless transform `u ↦ NS_T(u)` on matrix leaves: the nonlinear output of NL Eq. 52.

    Chain it after any momentum (`orthogonalize(momentum)`). Args as in `newton_schulz`, plus:

    Args:
      mask: pytree of bools, or a function of the updates returning one, selecting the leaves that
        get NS (only leaves of rank ≥ 2 can). None: every rank-≥2 leaf whose path does not contain
        a string of `exclude`. Under `optax.inject_hyperparams` a function must be a static arg.
      exclude: path substrings that skip NS when `mask` is None (default: embeddings, LM head).
      shape_scale: multiply by Muon's `√max(1, rows/cols)` (rows, cols: the leaf's last two axes).
    """

    def update_fn(updates, state, params=None):
        del params
        ns_mask = resolve_mask(updates, mask, exclude)
        out = orthogonalize_tree(updates, ns_mask, steps, coefficients, eps, shape_scale, dtype)
        return out, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def orthogonalize(
    momentum: optax.GradientTransformation,
    steps: int = 5,
    coefficients: Coefficients = "quintic",
    eps: float = 1e-7,
    mask: MaskOrFn = None,
    exclude: Sequence[str] = DEFAULT_NS_EXCLUDE,
    shape_scale: bool = False,
    dtype: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Wraps any momentum with the NS output: `u = NS_T(momentum(g))` (NL Eq. 52).

    E.g. `orthogonalize(scale_by_delta_momentum())` is delta momentum with an orthogonalised output;
    `orthogonalize(scale_by_preconditioned_momentum())` is Muon's direction.
    """
    return optax.chain(
        momentum,
        scale_by_newton_schulz(steps, coefficients, eps, mask, exclude, shape_scale, dtype),
    )
