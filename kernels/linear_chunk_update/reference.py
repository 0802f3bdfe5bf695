"""Reference for `linear_chunk_update`: the core's generic chunk path (the oracle).

`hope_jax.core.chunked_scan` with `method="generic"`: every token's gradient is materialised by
autodiff at the chunk snapshot and the inner optimizer's own `update` writes the running state
token by token (D2). It shares no closed-form code with the xla path or the kernels; at C = 1 it is
the token recurrence `hope_jax.core.reference_scan`.
"""
from __future__ import annotations

import jax

from hope_jax import core
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig

Array = jax.Array


def run_level(level: core.Level, q: Array, k: Array, v: Array, eta: Array, alpha: Array,
              w0: Array) -> tuple[Array, Array]:
    """`core.chunked_scan` of a linear level from the state `w0` [B, H, d_v, d_k] (float32)."""
    memory = (w0,)
    state = core.LevelState(memory=memory, opt_state=level.optimizer.init(memory),
                            snapshot=memory, position=None)
    y, new = core.chunked_scan(level, state, q, k, v, eta, alpha)
    return y, new.memory[0]


def linear_chunk_update_reference(q: Array, k: Array, v: Array, eta: Array, alpha: Array,
                                  w0: Array, config: LinearUpdateConfig) -> tuple[Array, Array]:
    """Shapes as `api.linear_chunk_update`; the generic (token-loop) chunk semantics."""
    return run_level(config.level("generic"), q, k, v, eta, alpha, w0)
