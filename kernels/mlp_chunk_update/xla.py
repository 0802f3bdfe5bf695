"""XLA path of `mlp_chunk_update`: the core's closed form (dual-form reads, WY/UT for DGD).

`hope_jax.core.chunked_scan` with `method="closed_form"`: no per-token gradient is materialised;
chunks run in a `lax.scan`, rematerialised in the backward pass (D30); autodiff gives gradients.
"""
from __future__ import annotations

import jax

from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig
from hope_jax.kernels.mlp_chunk_update.reference import run_level

Array = jax.Array


def mlp_chunk_update_xla(q: Array, k: Array, v: Array, eta: Array, alpha: Array, beta: Array,
                         params: tuple, momentum: tuple, config: MLPUpdateConfig):
    """Shapes as `api.mlp_chunk_update`."""
    level = config.level(params[0].shape[-2], "closed_form")
    return run_level(level, q, k, v, eta, alpha, beta, params, momentum)
