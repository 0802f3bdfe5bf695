"""Version shims for the kernels (jax 0.10.2 on Python 3.11, jax 0.12 on Python ≥ 3.12).

Every difference between the two jax lines that the kernels touch lives here, nowhere else:

* Triton compiler params: `pltriton.CompilerParams` on both lines. On jax 0.10.2 passing them is
  also what selects the Triton backend (the default GPU backend there is Mosaic GPU, which cannot
  lower `dot`); on jax 0.12 Triton is the default.
* Lowering a GPU kernel on a host without a GPU: jax 0.10.2 lowers for "cuda" directly; jax 0.12
  needs an abstract GPU device in scope (`gpu_lowering_context`).
* `jax.shard_map` (top level on both lines; `check_vma=False` is needed around a pallas_call).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

JAX_VERSION: tuple[int, ...] = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())


def tpu_compiler_params(dimension_semantics: tuple[str, ...],
                        vmem_limit_bytes: int | None = None) -> pltpu.CompilerParams:
    """Mosaic TPU compiler params (the old name `TPUCompilerParams` is gone on both lines)."""
    return pltpu.CompilerParams(dimension_semantics=dimension_semantics,
                                vmem_limit_bytes=vmem_limit_bytes)


def triton_compiler_params(num_warps: int, num_stages: int) -> pltriton.CompilerParams:
    """Triton compiler params; on jax 0.10.2 they also select Triton over Mosaic GPU."""
    return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


@contextlib.contextmanager
def gpu_lowering_context(device_kind: str = "NVIDIA H100", num_cores: int = 132):
    """Context in which `jit(f).trace(...).lower(lowering_platforms=("cuda",))` works on a CPU host.

    jax ≥ 0.11 asks the current mesh for a GPU device when lowering a Triton call and fails with
    "No supported GPU devices found" on a CPU host unless an abstract GPU device is in scope;
    jax 0.10.2 needs nothing.
    """
    if JAX_VERSION < (0, 11):
        yield
        return
    device = jax.sharding.AbstractDevice(device_kind=device_kind, num_cores=num_cores,
                                         platform="gpu")
    mesh = jax.sharding.AbstractMesh((1,), ("_gpu",), (jax.sharding.AxisType.Explicit,),
                                     abstract_device=device)
    with jax.sharding.use_abstract_mesh(mesh):
        yield


def shard_map(f: Callable, *, mesh, in_specs, out_specs) -> Callable:
    """`jax.shard_map` with `check_vma=False` (a pallas_call fails the vma check in shard_map)."""
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
