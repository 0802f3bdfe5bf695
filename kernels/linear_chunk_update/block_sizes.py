"""Block sizes of `linear_chunk_update`: a frozen, validated dataclass and a tuned table.

The chunk size C is part of the model (it changes the math, D2), so it is not a block size. What a
block size may change is how the work is cut: the rows of the linear memory `W [d_v, d_k]` evolve
independently (the DGD system involves only keys and gates), so `block_dv` value rows go to one grid
step, and the d_v/block_dv blocks run in parallel. The Triton kernel also takes warps and stages.

The table's entries are defaults chosen from the constraints, not yet measured on hardware: run
experiments/bench/bench_kernels.py on a TPU / GPU (BUILD.md, "Kernels") and fill them in.
"""
from __future__ import annotations

import dataclasses

BACKWARDS = ("pallas", "xla")


def _is_pow2(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0


@dataclasses.dataclass(frozen=True)
class LinearBlockSizes:
    """Attributes:
      block_dv: value rows of W per grid step (None: all of d_v).
      num_warps, num_stages: Triton launch parameters (GPU kernel only).
      vmem_limit_bytes: Mosaic's scoped VMEM limit (TPU kernel only; None: the compiler default).
      backward: "pallas" (the backward kernel) or "xla" (the fallback reverse scan of the core's
        chunk functions, for a backend that cannot compile the backward kernel).
    """

    block_dv: int | None = None
    num_warps: int = 4
    num_stages: int = 1
    vmem_limit_bytes: int | None = None
    backward: str = "pallas"

    def __post_init__(self):
        if self.backward not in BACKWARDS:
            raise ValueError(f"LinearBlockSizes.backward must be one of {BACKWARDS}, "
                             f"got {self.backward!r}")
        for name in ("num_warps", "num_stages"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"LinearBlockSizes.{name} must be a positive int, got {val!r}")
        if not _is_pow2(self.num_warps):
            raise ValueError(f"LinearBlockSizes.num_warps must be a power of two, "
                             f"got {self.num_warps}")
        dv = self.block_dv
        if dv is not None and (isinstance(dv, bool) or not isinstance(dv, int) or dv < 1):
            raise ValueError(f"LinearBlockSizes.block_dv must be a positive int or None, "
                             f"got {self.block_dv!r}")
        if self.vmem_limit_bytes is not None and self.vmem_limit_bytes < (1 << 20):
            raise ValueError(f"LinearBlockSizes.vmem_limit_bytes must be >= 1 MiB, "
                             f"got {self.vmem_limit_bytes}")

    def dv_block(self, d_v: int) -> int:
        return d_v if self.block_dv is None else min(self.block_dv, d_v)

    def tpu_reason(self, c: int, d_k: int, d_v: int) -> str | None:
        """Why the TPU kernel cannot take these shapes (None if it can): Mosaic tiles the last two
        block dims by (8, 128) unless a block dim equals the array dim."""
        if c % 8:
            return f"chunk_size {c} is not a multiple of 8 (TPU sublane tiling)"
        bdv = self.dv_block(d_v)
        if d_v % bdv:
            return f"block_dv {bdv} does not divide d_v {d_v}"
        if bdv != d_v and bdv % 128:
            return f"block_dv {bdv} must equal d_v or be a multiple of 128 (TPU lane tiling)"
        return None

    def gpu_reason(self, c: int, d_k: int, d_v: int) -> str | None:
        """Why the Triton kernel cannot take these shapes: Triton arrays have power-of-two sizes
        and `tl.dot` needs every dimension ≥ 16."""
        bdv = self.dv_block(d_v)
        for name, x in (("chunk_size", c), ("d_k", d_k), ("block_dv", bdv)):
            if not _is_pow2(x) or x < 16:
                return f"{name} = {x} must be a power of two >= 16 for Triton"
        if d_v % bdv:
            return f"block_dv {bdv} does not divide d_v {d_v}"
        return None


def shape_bucket(d_k: int, d_v: int) -> str:
    d = max(d_k, d_v)
    return "d<=64" if d <= 64 else "d<=128" if d <= 128 else "d>128"


# (platform, dtype, bucket) → block sizes. Untuned defaults (see the module docstring).
TUNED: dict[tuple[str, str, str], LinearBlockSizes] = {
    ("tpu", "float32", "d<=64"): LinearBlockSizes(),
    ("tpu", "float32", "d<=128"): LinearBlockSizes(),
    ("tpu", "float32", "d>128"): LinearBlockSizes(block_dv=128),
    ("tpu", "bfloat16", "d<=64"): LinearBlockSizes(),
    ("tpu", "bfloat16", "d<=128"): LinearBlockSizes(),
    ("tpu", "bfloat16", "d>128"): LinearBlockSizes(block_dv=128),
    ("gpu", "float32", "d<=64"): LinearBlockSizes(num_warps=4, num_stages=1),
    ("gpu", "float32", "d<=128"): LinearBlockSizes(block_dv=64, num_warps=4, num_stages=1),
    ("gpu", "float32", "d>128"): LinearBlockSizes(block_dv=64, num_warps=8, num_stages=1),
    ("gpu", "bfloat16", "d<=64"): LinearBlockSizes(num_warps=4, num_stages=1),
    ("gpu", "bfloat16", "d<=128"): LinearBlockSizes(block_dv=64, num_warps=4, num_stages=1),
    ("gpu", "bfloat16", "d>128"): LinearBlockSizes(block_dv=64, num_warps=8, num_stages=1),
}


def default_block_sizes(platform: str, dtype, d_k: int, d_v: int) -> LinearBlockSizes:
    """The table's entry for (platform, dtype, shape bucket), or the plain defaults."""
    import jax.numpy as jnp

    key = (platform, jnp.dtype(dtype).name, shape_bucket(d_k, d_v))
    return TUNED.get(key, LinearBlockSizes())
