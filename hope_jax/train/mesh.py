"""The device mesh of a run and the shardings of its state and batches (docs/training.md).

Mesh axes (data, fsdp, tensor, sequence) come from `config.mesh`; at most one may be -1 and
takes the remaining devices (`hope_jax.sharding.rules.mesh_shape`). Axes are Auto (GSPMD style;
docs/training.md, "Pitfalls of this JAX stack", 1). Parameters are sharded by the logical-axis
rules (`hope_jax.sharding.rules`), optimizer-state leaves shaped like a parameter follow it, every
other leaf (step counts, phases) is replicated (pitfall 2), and batches are split over
`BATCH_AXES` ("data", "fsdp") on their first dimension.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from hope_jax.sharding.rules import (BATCH_AXES, MESH_AXES, check_batch, make_mesh, mesh_shape,
                                     param_shardings)


def build_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The run's Mesh (Auto axes) over `devices` (default: all of `jax.devices()`)."""
    if devices is None:  # jax.make_mesh orders devices for the hardware topology (TPU/GPU)
        sizes = mesh_shape(dict(mesh_cfg), jax.device_count())
        return make_mesh(sizes)
    devs = list(devices)
    sizes = mesh_shape(dict(mesh_cfg), len(devs))
    arr = np.asarray(devs, dtype=object).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def validate_batch(global_batch: int, mesh: Mesh, grad_accum: int = 1, process_count: int = 1
                   ) -> None:
    """Raises ValueError unless each micro-batch (global_batch / grad_accum) splits over
    data×fsdp of `mesh` and the global batch splits over the processes (`check_batch`)."""
    check_batch(global_batch, data_parallel_size(mesh), grad_accum, process_count)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches [B, …]: B over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def flat_param_shardings(param_state, codec, mesh: Mesh) -> dict[str, NamedSharding]:
    """{name: NamedSharding} from the params' `logical_axes` metadata and the rules table."""
    return codec.to_flat(param_shardings(param_state, mesh))


def opt_state_shardings(abstract_opt_state: Any, params_sharding: Mapping[str, NamedSharding],
                        abstract_params: Mapping[str, Any], mesh: Mesh) -> Any:
    """Shardings for an optimizer state: a leaf under a dict key naming a parameter and of that
    parameter's shape gets the parameter's sharding; everything else is replicated."""
    rep = replicated(mesh)

    def one(path, leaf):
        for k in reversed(path):
            name = getattr(k, "key", None)
            if isinstance(name, str) and name in params_sharding:
                if tuple(getattr(leaf, "shape", ())) == tuple(abstract_params[name].shape):
                    return params_sharding[name]
                break
        return rep

    return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


__all__ = ["batch_sharding", "build_mesh", "data_parallel_size", "flat_param_shardings",
           "opt_state_shardings", "replicated", "validate_batch"]
