"""Block sizes of `mlp_chunk_update`: a frozen, validated dataclass and a tuned table.

The MLP memory's layers are coupled through the hidden units (the snapshot errors need the full
hidden sum), so one program holds a whole head's state `(W_in, W_out, S_in, S_out)`: there is no
state dimension to split. What is left to tune is launch / compiler parameters: Triton warps and
stages, Mosaic's VMEM limit (4 · h · d floats of state plus the chunk's temporaries must fit).

The table's entries are defaults chosen from the constraints, not yet measured on hardware: run
experiments/bench/bench_kernels.py on a TPU / GPU (BUILD.md, "Kernels") and fill them in.
"""
from __future__ import annotations

import dataclasses

BACKWARDS = ("pallas", "xla")


def _is_pow2(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0


@dataclasses.dataclass(frozen=True)
class MLPBlockSizes:
    """Attributes:
      num_warps, num_stages: Triton launch parameters (GPU kernel only).
      vmem_limit_bytes: Mosaic's scoped VMEM limit (TPU kernel only; None: the compiler default).
      backward: "pallas" (the backward kernel) or "xla" (the fallback reverse scan of the core's
        closed form, for a backend that cannot compile the backward kernel).
    """

    num_warps: int = 4
    num_stages: int = 1
    vmem_limit_bytes: int | None = None
    backward: str = "pallas"

    def __post_init__(self):
        if self.backward not in BACKWARDS:
            raise ValueError(f"MLPBlockSizes.backward must be one of {BACKWARDS}, "
                             f"got {self.backward!r}")
        for name in ("num_warps", "num_stages"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"MLPBlockSizes.{name} must be a positive int, got {val!r}")
        if not _is_pow2(self.num_warps):
            raise ValueError(f"MLPBlockSizes.num_warps must be a power of two, "
                             f"got {self.num_warps}")
        if self.vmem_limit_bytes is not None and self.vmem_limit_bytes < (1 << 20):
            raise ValueError(f"MLPBlockSizes.vmem_limit_bytes must be >= 1 MiB, "
                             f"got {self.vmem_limit_bytes}")

    def tpu_reason(self, c: int, d: int, h: int) -> str | None:
        """Why the TPU kernel cannot take these shapes (None if it can)."""
        if c % 8:
            return f"chunk_size {c} is not a multiple of 8 (TPU sublane tiling)"
        return None

    def gpu_reason(self, c: int, d: int, h: int) -> str | None:
        """Why the Triton kernel cannot take these shapes: power-of-two sizes ≥ 16 (`tl.dot`)."""
        for name, x in (("chunk_size", c), ("d", d), ("hidden", h)):
            if not _is_pow2(x) or x < 16:
                return f"{name} = {x} must be a power of two >= 16 for Triton"
        return None


def shape_bucket(d: int, h: int) -> str:
    size = d * h
    return "dh<=16K" if size <= 16384 else "dh<=64K" if size <= 65536 else "dh>64K"


# (platform, dtype, bucket) → block sizes. Untuned defaults (see the module docstring).
TUNED: dict[tuple[str, str, str], MLPBlockSizes] = {
    ("tpu", "float32", "dh<=16K"): MLPBlockSizes(),
    ("tpu", "float32", "dh<=64K"): MLPBlockSizes(vmem_limit_bytes=64 << 20),
    ("tpu", "float32", "dh>64K"): MLPBlockSizes(vmem_limit_bytes=100 << 20),
    ("tpu", "bfloat16", "dh<=16K"): MLPBlockSizes(),
    ("tpu", "bfloat16", "dh<=64K"): MLPBlockSizes(vmem_limit_bytes=64 << 20),
    ("tpu", "bfloat16", "dh>64K"): MLPBlockSizes(vmem_limit_bytes=100 << 20),
    ("gpu", "float32", "dh<=16K"): MLPBlockSizes(num_warps=4),
    ("gpu", "float32", "dh<=64K"): MLPBlockSizes(num_warps=8),
    ("gpu", "float32", "dh>64K"): MLPBlockSizes(num_warps=8),
    ("gpu", "bfloat16", "dh<=16K"): MLPBlockSizes(num_warps=4),
    ("gpu", "bfloat16", "dh<=64K"): MLPBlockSizes(num_warps=8),
    ("gpu", "bfloat16", "dh>64K"): MLPBlockSizes(num_warps=8),
}


def default_block_sizes(platform: str, dtype, d: int, h: int) -> MLPBlockSizes:
    """The table's entry for (platform, dtype, shape bucket), or the plain defaults."""
    import jax.numpy as jnp

    return TUNED.get((platform, jnp.dtype(dtype).name, shape_bucket(d, h)), MLPBlockSizes())
