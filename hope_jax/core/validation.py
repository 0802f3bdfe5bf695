"""Checks of a level's inputs, run on shapes and dtypes only, before any tracing of heavy work.

Every failure is a ValueError that names the argument and the shapes involved.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.core.level import Level, LevelState


def _shape(x) -> tuple:
    return tuple(getattr(x, "shape", ()))


def _check_float(name: str, x) -> None:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise ValueError(f"{name} must be an array, got {type(x).__name__}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must have a floating dtype, got {dtype} (shape {_shape(x)})")


def check_level_inputs(level: Level, state: LevelState, q, k, v, eta, alpha, beta) -> None:
    """Validates shapes and dtypes of a chunked or reference scan's arguments.

    Expected: q, k [B, T, H, d_k]; v [B, T, H, d_v]; eta (and alpha, beta when the inner optimizer
    uses them) [B, T, H]; state.memory leaves [B, H, out_l, in_l] matching the memory for
    (d_k, d_v).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float(name, x)
        if len(_shape(x)) != 4:
            raise ValueError(f"{name} must have shape [batch, time, heads, dim], got {_shape(x)}")
    b, t, h, d_k = _shape(k)
    if _shape(q) != _shape(k):
        raise ValueError(f"q and k must have the same shape [B, T, H, d_k], got q {_shape(q)} "
                         f"and k {_shape(k)}")
    if _shape(v)[:3] != (b, t, h):
        raise ValueError(f"v must have shape [B, T, H, d_v] = [{b}, {t}, {h}, d_v] like k, "
                         f"got {_shape(v)}")
    d_v = _shape(v)[3]
    if t < 1:
        raise ValueError(f"the sequence must hold at least one token, got k of shape {_shape(k)}")

    spec = level.spec
    needs_alpha = spec is not None and (spec.retention or spec.dgd_gated)
    needs_beta = spec is not None and spec.momentum_slot is not None
    gates = (("eta", eta, True), ("alpha", alpha, needs_alpha), ("beta", beta, needs_beta))
    for name, g, required in gates:
        if g is None:
            if required:
                raise ValueError(f"{name} is required by this level's inner optimizer "
                                 f"(expected shape [B, T, H] = {(b, t, h)})")
            continue
        _check_float(name, g)
        if _shape(g) != (b, t, h):
            raise ValueError(f"{name} must have shape [B, T, H] = {(b, t, h)} to match k "
                             f"{_shape(k)}, got {_shape(g)}")

    if not isinstance(state, LevelState):
        raise ValueError(f"state must be a LevelState (see Level.init_state), "
                         f"got {type(state).__name__}")
    level.memory.check_params(state.memory, d_k, d_v, where="state.memory")
    level.memory.check_params(state.snapshot, d_k, d_v, where="state.snapshot")
    for l, w in enumerate(state.memory):
        _check_float(f"state.memory[{l}]", w)
        if _shape(w)[:2] != (b, h):
            raise ValueError(f"state.memory[{l}] must have leading dims [B, H] = {(b, h)} matching "
                             f"k {_shape(k)}, got {_shape(w)}; build it with Level.init_state")
    if state.position is not None and _shape(state.position) != ():
        raise ValueError(f"state.position must be a scalar, got shape {_shape(state.position)}")


def check_initial_params(level: Level, params, num_heads: int, d_k: int, d_v: int) -> None:
    """Validates an initial memory ([H, out_l, in_l] leaves) for `Level.init_state`."""
    level.memory.check_params(params, d_k, d_v, where="params")
    for l, w in enumerate(params):
        if _shape(w)[:1] != (num_heads,) or len(_shape(w)) != 3:
            raise ValueError(f"params[{l}] must have shape [H, out, in] with H = {num_heads}, "
                             f"got {_shape(w)}")


def tree_dtype(tree):
    """The dtype of the first leaf of a pytree."""
    return jax.tree.leaves(tree)[0].dtype
