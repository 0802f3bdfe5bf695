"""Sharding as data: logical axis names on every parameter, one rules table to mesh axes."""
from hope_jax.sharding.rules import (LOGICAL_AXIS_RULES, MESH_AXES, logical_to_mesh_axes,
                                     logical_to_sharding, make_mesh, param_shardings, shard_model)

__all__ = ["LOGICAL_AXIS_RULES", "MESH_AXES", "logical_to_mesh_axes", "logical_to_sharding",
           "make_mesh", "param_shardings", "shard_model"]
