"""Choosing an implementation: `implementation=` of every kernel op (Levanter-style dispatch).

* "auto": Pallas on TPU ("pallas_tpu") and GPU ("pallas_gpu") when the kernel supports the shapes,
  else "xla" with a warning; "xla" on CPU (the intended choice there, no warning).
* "reference": the core's generic chunk path (materialised snapshot gradients, token loop).
* "xla": the core's fast chunked scan (closed / linear form), autodiff for gradients.
* "pallas_tpu" / "pallas_gpu": the kernels, compiled for the device (custom_vjp backward).
* "interpret": the TPU kernel run by the Pallas interpreter (any backend; for tests).

An explicit choice that cannot run raises ValueError with the reason.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax

IMPLEMENTATIONS = ("auto", "reference", "xla", "pallas_tpu", "pallas_gpu", "interpret")


def backend_platform() -> str:
    """'tpu', 'gpu' or 'cpu' (the default backend; 'cuda'/'rocm' are reported as 'gpu')."""
    platform = jax.default_backend()
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def resolve_implementation(implementation: str, why_not: Callable[[str], str | None],
                           op: str, stacklevel: int = 3) -> str:
    """The implementation to run.

    Args:
      implementation: one of IMPLEMENTATIONS.
      why_not: name → None if that implementation can run these inputs here, else the reason.
      op: the op's name, for messages.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{op}: implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    if implementation != "auto":
        reason = why_not(implementation)
        if reason is not None:
            raise ValueError(f"{op}: implementation={implementation!r} is not supported here: "
                             f"{reason}")
        return implementation
    platform = backend_platform()
    wanted = {"tpu": "pallas_tpu", "gpu": "pallas_gpu"}.get(platform)
    if wanted is None:
        return "xla"
    reason = why_not(wanted)
    if reason is None:
        return wanted
    warnings.warn(f"{op}: implementation='auto' falls back to 'xla' on {platform}: {reason}",
                  stacklevel=stacklevel)
    return "xla"


def resolve_with_block_sizes(implementation: str, op: str, block_for: Callable[[str], Any],
                             dims: tuple[int, ...]) -> str:
    """`resolve_implementation` with the ops' common reasons: reference and xla always run; a
    Pallas kernel needs its backend and block sizes (`block_for(platform)`, with `tpu_reason` /
    `gpu_reason` methods) that fit `dims`; the interpreter needs TPU-valid blocks."""

    def why_not(name: str) -> str | None:
        if name in ("reference", "xla"):
            return None
        if name in ("pallas_tpu", "pallas_gpu"):
            reason = platform_reason(name)
            if reason is not None:
                return reason
        if name == "pallas_gpu":
            return block_for("gpu").gpu_reason(*dims)
        return block_for("tpu").tpu_reason(*dims)

    return resolve_implementation(implementation, why_not, op, stacklevel=4)


def platform_reason(implementation: str) -> str | None:
    """Why a Pallas implementation cannot run on this backend (None if it can)."""
    platform = backend_platform()
    if implementation == "pallas_tpu" and platform != "tpu":
        return (f"compiled Mosaic TPU kernels need a TPU backend (this one is {platform!r}); "
                "use implementation='interpret' to run the kernel in the Pallas interpreter")
    if implementation == "pallas_gpu" and platform != "gpu":
        return (f"compiled Triton kernels need a GPU backend (this one is {platform!r}); "
                "use implementation='interpret' to run the kernel in the Pallas interpreter")
    return None
