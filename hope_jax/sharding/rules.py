"""The logical-axis rules table: logical parameter/activation axis names → mesh axes.

Layers name only logical axes (MaxText style): every `nnx.Param` carries a
`logical_axes` metadata tuple, one name (or None) per dimension. This module is the one place
that maps those names to the mesh axes `data`, `fsdp`, `tensor`, `sequence`. The same model then
runs on 1 CPU, 8 fake devices or a pod.

Parameters are annotated with plain metadata (not flax's `out_sharding`), so modules build
anywhere without a mesh (no eager sharding: docs/training.md, "Pitfalls of this JAX stack",
4); `shard_model` / `param_shardings` place them on a mesh afterwards.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hope_jax import _compat

MESH_AXES = ("data", "fsdp", "tensor", "sequence")
BATCH_AXES = ("data", "fsdp")  # the data-parallel axes: batches split over them on dimension 0

# logical name → mesh axis, tuple of mesh axes, or None (replicated). See docs/layers.md.
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": BATCH_AXES,         # activations: batch over data-parallel axes
    "length": "sequence",        # activations: sequence parallelism
    "embed": "fsdp",             # model width d: fully sharded data parallel
    "vocab": "tensor",           # embedding rows / LM-head columns
    "heads": "tensor",           # H·d_h projection outputs, per-head tensors [H, ...]
    "mlp": "tensor",             # SwiGLU hidden width
    "head_dim": None,            # d_h inside a head
    "memory_out": None,          # rows of an inner memory layer [H, out, in]
    "memory_in": None,           # columns of an inner memory layer
    "conv": None,                # depthwise conv taps
    "persistent": None,          # persistent-memory tokens N_p
    "norm": None,                # norm scales that should not be sharded
}


def logical_to_mesh_axes(names: Sequence[str | None], shape: Sequence[int] | None = None,
                         mesh: Mesh | None = None,
                         rules: dict | None = None) -> PartitionSpec:
    """PartitionSpec for one array from its logical axis names.

    A mesh axis is dropped (the dimension replicated) when it is not in `mesh`, when its size does
    not divide the dimension, or when an earlier dimension already uses it.
    """
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        target = None if name is None else rules.get(name)
        if target is None:
            spec.append(None)
            continue
        axes = (target,) if isinstance(target, str) else tuple(target)
        kept = []
        size = 1
        for ax in axes:
            if ax in used:
                continue
            if mesh is not None:
                if ax not in mesh.shape:
                    continue
                n = mesh.shape[ax]
                if shape is not None and shape[i] % (size * n) != 0:
                    continue
                size *= n
            kept.append(ax)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


ACTIVATION_AXES = ("batch", "length", "embed")  # the residual stream h [B, T, d]


def constrain(x: jax.Array, names: Sequence[str | None] = ACTIVATION_AXES,
              rules: dict | None = None) -> jax.Array:
    """`with_sharding_constraint` of an activation by its logical axis names, on the mesh of the
    current context (`jax.sharding.use_abstract_mesh` around tracing, as `train/build.py` does).

    A no-op without a mesh in context (one CPU, the tests of single layers), for a rank that does
    not match `names`, and on meshes with Explicit axes (where shardings travel with the types).
    With the rules above, h [B, T, d] becomes P(("data", "fsdp"), "sequence", None): batch over the
    data-parallel axes (which takes fsdp, so the width stays whole), length over `sequence`.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or x.ndim != len(names):
        return x
    if any(t != jax.sharding.AxisType.Auto for t in mesh.axis_types):
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_mesh_axes(names, x.shape, mesh, rules))


def logical_to_sharding(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                        rules: dict | None = None) -> NamedSharding:
    """NamedSharding on `mesh` for an array of `shape` with logical axis `names`."""
    return NamedSharding(mesh, logical_to_mesh_axes(names, shape, mesh, rules))


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def param_shardings(state: nnx.State, mesh: Mesh, rules: dict | None = None) -> nnx.State:
    """A NamedSharding for every array in an nnx State (from `nnx.state(model)` or an abstract one).

    Variables without `logical_axes` metadata (RNG counters, scalars) are replicated.
    """
    def one(v):
        if not _is_var(v):
            return NamedSharding(mesh, PartitionSpec())
        names = v.get_metadata().get("logical_axes")
        value = v.get_value() if hasattr(v, "get_value") else v[...]
        shape = getattr(value, "shape", ())
        if names is None or len(names) != len(shape):
            return NamedSharding(mesh, PartitionSpec())
        return logical_to_sharding(names, shape, mesh, rules)

    return jax.tree.map(one, state, is_leaf=_is_var)


def shard_model(model: nnx.Module, mesh: Mesh, rules: dict | None = None) -> nnx.Module:
    """Places every variable of `model` on `mesh` per the rules table (in place); returns it."""
    graphdef, state = nnx.split(model)
    shardings = param_shardings(state, mesh, rules)
    values = jax.tree.map(lambda v: v.get_value() if _is_var(v) else v, state, is_leaf=_is_var)
    placed = jax.device_put(values, jax.tree.map(lambda s: s, shardings, is_leaf=_is_var),
                            may_alias=False)
    nnx.update(model, placed)
    return model


def make_mesh(axis_sizes: dict[str, int] | Iterable[int], devices=None) -> Mesh:
    """A mesh over (data, fsdp, tensor, sequence) with Auto axes; sizes as a dict or 4 ints."""
    if isinstance(axis_sizes, dict):
        unknown = set(axis_sizes) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of "
                             f"{MESH_AXES}")
        sizes = tuple(axis_sizes.get(a, 1) for a in MESH_AXES)
    else:
        sizes = tuple(axis_sizes)
    return _compat.make_mesh(sizes, MESH_AXES, devices=devices)


def mesh_shape(mesh_cfg: Mapping[str, int], device_count: int) -> dict[str, int]:
    """{axis: size} of `config.mesh` on `device_count` devices, with the -1 axis filled in;
    raises ValueError naming the keys unless the sizes fill the devices exactly (config
    validation and the trainer's `build_mesh` both size the mesh here)."""
    unknown = set(mesh_cfg) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"config.mesh: unknown axes {sorted(unknown)}; expected {MESH_AXES}")
    sizes = {ax: int(mesh_cfg.get(ax, 1)) for ax in MESH_AXES}
    bad = [ax for ax, n in sizes.items() if n == 0 or n < -1]
    if bad:
        raise ValueError("; ".join(f"config.mesh.{ax}: must be -1 (fill) or ≥ 1, got {sizes[ax]}"
                                   for ax in bad))
    fill = [ax for ax, n in sizes.items() if n == -1]
    if len(fill) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {fill}")
    fixed = math.prod(n for n in sizes.values() if n != -1)
    shape = " × ".join(f"{ax}={n}" for ax, n in sizes.items())
    if fill:
        if device_count % fixed:
            raise ValueError(f"config.mesh: {shape} — the fixed axes (product {fixed}) do not "
                             f"divide the {device_count} devices")
        sizes[fill[0]] = device_count // fixed
    elif fixed != device_count:
        raise ValueError(f"config.mesh: {shape} has {fixed} devices but {device_count} are "
                         f"available; set one axis to -1 to fill")
    return sizes


def check_batch(global_batch: int, data_parallel: int, grad_accum: int = 1,
                process_count: int = 1) -> None:
    """Raises ValueError (naming the keys) unless the global batch splits over the processes and
    each micro-batch (global_batch / grad_accum) over the `data_parallel` devices of the
    BATCH_AXES."""
    if global_batch % process_count:
        raise ValueError(f"config.train.global_batch: {global_batch} does not split over "
                         f"{process_count} processes")
    micro, rem = divmod(global_batch, grad_accum)
    if rem:
        raise ValueError(f"config.optim.grad_accum: {grad_accum} micro-batches do not divide "
                         f"train.global_batch={global_batch}")
    if micro % data_parallel:
        raise ValueError(f"config.train.global_batch: the micro-batch of {micro} sequences "
                         f"(global_batch / grad_accum) does not split over the data-parallel "
                         f"mesh axes data × fsdp = {data_parallel}")
