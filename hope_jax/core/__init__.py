"""The core of levels: pure JAX, no Flax (design §0–§4).

A level is a memory × objective × inner optimizer × chunk size (`Level`); `chunked_scan` runs it
over a sequence in closed (dual / WY) form, `reference_scan` is the token-by-token oracle.
"""
from hope_jax.core import inner_optimizers, objectives
from hope_jax.core.inner_optimizers import (InnerTransform, RecurrenceSpec, add_dgd_preconditioner,
                                            add_retention, chain, dgd, gd, momentum_gd,
                                            scale_by_step_size, trace_momentum)
from hope_jax.core.level import Level, LevelState
from hope_jax.core.memories import MLPMemory, matrix_memory, multi_head_apply, residual_mlp_memory
from hope_jax.core.objectives import Objective, dot_product, l2
from hope_jax.core.reference import reference_scan
from hope_jax.core.scan import chunked_scan

__all__ = [
    "InnerTransform", "Level", "LevelState", "MLPMemory", "Objective", "RecurrenceSpec",
    "add_dgd_preconditioner", "add_retention", "chain", "chunked_scan", "dgd", "dot_product", "gd",
    "inner_optimizers", "l2", "matrix_memory", "momentum_gd", "multi_head_apply", "objectives",
    "reference_scan", "residual_mlp_memory", "scale_by_step_size", "trace_momentum",
]
