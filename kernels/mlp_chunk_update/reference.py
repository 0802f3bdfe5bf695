"""Reference for `mlp_chunk_update`: the core's generic chunk path (the oracle).

`hope_jax.core.chunked_scan` with `method="generic"`: per-token gradients materialised by autodiff
at the chunk snapshot, then the inner optimizer's own `update` token by token (D2). No closed-form
code is shared with the xla path or the kernels.
"""
from __future__ import annotations

import jax

from hope_jax import core
from hope_jax.core.inner_optimizers import MomentumState
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig

Array = jax.Array


def run_level(level: core.Level, q, k, v, eta, alpha, beta, params: tuple, momentum: tuple):
    """`core.chunked_scan` from memory `params` and momentum `momentum` (tuples of [B, H, ·, ·])."""
    opt_state = level.optimizer.init(params)
    slot = level.spec.momentum_slot
    opt_state = opt_state[:slot] + (MomentumState(tuple(momentum)),) + opt_state[slot + 1:]
    state = core.LevelState(memory=tuple(params), opt_state=opt_state, snapshot=tuple(params),
                            position=None)
    y, new = core.chunked_scan(level, state, q, k, v, eta, alpha, beta)
    return y, new.memory, new.opt_state[slot].momentum


def mlp_chunk_update_reference(q: Array, k: Array, v: Array, eta: Array, alpha: Array,
                               beta: Array, params: tuple, momentum: tuple,
                               config: MLPUpdateConfig):
    """Shapes as `api.mlp_chunk_update`; the generic (token-loop) chunk semantics."""
    level = config.level(params[0].shape[-2], "generic")
    return run_level(level, q, k, v, eta, alpha, beta, params, momentum)
