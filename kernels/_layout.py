"""Layout shared by the kernel ops: [B, T, H, ·] ↔ chunked [B·H, N, C, ·], padding and gates.

The kernels see one row per (sequence, head) and the sequence split into N chunks of C tokens,
right-padded to N·C (D35: padded tokens neither write nor count; the write mask does that).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from hope_jax.kernels._chunk_math import F32, LOG_FLOOR

Array = jax.Array


def num_chunks(t: int, c: int) -> int:
    return math.ceil(t / c)


def to_chunks(x: Array, c: int) -> Array:
    """[B, T, H, ...] → [B·H, N, C, ...], zero right-padded to N·C tokens."""
    b, t, h = x.shape[:3]
    n = num_chunks(t, c)
    x = jnp.moveaxis(x, 2, 1).reshape(b * h, t, *x.shape[3:])
    x = jnp.pad(x, [(0, 0), (0, n * c - t)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(b * h, n, c, *x.shape[2:])


def from_chunks(x: Array, b: int, t: int) -> Array:
    """[B·H, N, C, ...] → [B, T, H, ...] (drops the padding)."""
    bh, n, c = x.shape[:3]
    x = x.reshape(b, bh // b, n * c, *x.shape[3:])[:, :, :t]
    return jnp.moveaxis(x, 1, 2)


def flat_heads(x: Array) -> Array:
    """[B, H, ...] → [B·H, ...]."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unflat_heads(x: Array, b: int) -> Array:
    """[B·H, ...] → [B, H, ...]."""
    return x.reshape(b, x.shape[0] // b, *x.shape[1:])


def chunk_mask(t: int, n: int, c: int) -> np.ndarray:
    """[N, C] bool: True at real tokens (a static numpy constant)."""
    return (np.arange(n * c) < t).reshape(n, c)


def log_gate(g: Array) -> Array:
    """log g clamped at log(1e-30), so a gate of exactly 0 stays finite in the kernels."""
    return jnp.maximum(jnp.log(jnp.maximum(g, 1e-30)), LOG_FLOOR)


def gate_layouts(channels: list[Array], pad_to: int | None = None) -> tuple[Array, Array]:
    """Per-token gate channels [BH, N, C] → (columns [BH, N, C, G], rows [BH, N, G, C]), float32.

    `pad_to` pads G with zero channels (Triton values must have power-of-two sizes).
    """
    g = len(channels)
    if pad_to is not None and pad_to > g:
        channels = channels + [jnp.zeros_like(channels[0])] * (pad_to - g)
    stacked = jnp.stack([x.astype(jnp.float32) for x in channels], axis=-1)  # [BH, N, C, G]
    return stacked, jnp.swapaxes(stacked, -1, -2)


def poison_like(shape_dtypes) -> list[Array]:
    """NaN-filled buffers shaped like the given ShapeDtypeStructs (outputs aliased to them)."""
    return [jnp.full(s.shape, jnp.nan, s.dtype) for s in shape_dtypes]


def with_poison(poison: bool, args: list, in_specs: list, out_specs: list, out_shape: list
                ) -> tuple[list, list, dict, int]:
    """(args, in_specs, input_output_aliases, n_poison) of a pallas_call. With `poison`, NaN
    buffers like every output are appended as inputs (same block specs) and aliased to the
    outputs, so a test proves the kernel writes every element; the kernel skips the n_poison
    extra refs."""
    if not poison:
        return args, in_specs, {}, 0
    n = len(out_shape)
    aliases = {len(args) + i: i for i in range(n)}
    return args + poison_like(out_shape), in_specs + out_specs, aliases, n


def load_gates(gc_ref, gr_ref, channels: range | list[int],
               *lead) -> tuple[list[Array], list[Array]]:
    """Gate channels j ∈ channels as columns [C, 1] and rows [1, C], sliced from the gate refs
    (column [.., C, G], row [.., G, C] layouts; Triton cannot slice values); `lead` indexes
    leading ref dims (the GPU kernels' chunk). For the backward kernels."""
    cols = [gc_ref[(*lead, slice(None), slice(j, j + 1))] for j in channels]
    rows = [gr_ref[(*lead, slice(j, j + 1), slice(None))] for j in channels]
    return cols, rows


def store_gates(gc_ref, gr_ref, dcols: list[Array], drows: list[Array], *lead) -> None:
    """Writes gate cotangents channel by channel into column [.., C, G] / row [.., G, C] refs (no
    in-kernel concatenate); channels beyond the given ones (padding, the write mask) get zeros."""
    c = dcols[0].shape[0]
    for j in range(gc_ref.shape[-1]):
        col = dcols[j] if j < len(dcols) else jnp.zeros((c, 1), F32)
        row = drows[j] if j < len(drows) else jnp.zeros((1, c), F32)
        gc_ref[(*lead, slice(None), slice(j, j + 1))] = col
        gr_ref[(*lead, slice(j, j + 1), slice(None))] = row
