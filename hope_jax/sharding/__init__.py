"""Sharding as data: logical axis names on every parameter, one rules table to mesh axes."""
from hope_jax.sharding.rules import (BATCH_AXES, LOGICAL_AXIS_RULES, MESH_AXES, check_batch,
                                     logical_to_mesh_axes, logical_to_sharding, make_mesh,
                                     mesh_shape, param_shardings, shard_model)

__all__ = ["BATCH_AXES", "LOGICAL_AXIS_RULES", "MESH_AXES", "check_batch", "logical_to_mesh_axes",
           "logical_to_sharding", "make_mesh", "mesh_shape", "param_shardings", "shard_model"]
