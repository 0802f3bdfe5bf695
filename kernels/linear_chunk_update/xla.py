"""XLA path of `linear_chunk_update`: the core's linear fast path (affine chunk maps, WY/UT).

`hope_jax.core.chunked_scan` with `method="linear"`: the state-independent maps of every chunk are
built in parallel, the `lax.scan` over chunks applies them (each chunk rematerialised in the
backward pass, D30), and gradients come from autodiff. Same math as the kernels, one source.
"""
from __future__ import annotations

import jax

from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig
from hope_jax.kernels.linear_chunk_update.reference import run_level

Array = jax.Array


def linear_chunk_update_xla(q: Array, k: Array, v: Array, eta: Array, alpha: Array, w0: Array,
                            config: LinearUpdateConfig) -> tuple[Array, Array]:
    """Shapes as `api.linear_chunk_update`."""
    return run_level(config.level("linear"), q, k, v, eta, alpha, w0)
