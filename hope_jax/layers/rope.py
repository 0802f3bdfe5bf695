"""Rotary position embedding (RoPE), used only inside softmax attention (D36).

Pairs (x_i, x_{i+d/2}) are rotated by angle p·θ_i with θ_i = base^{−2i/d} (the "half" layout
of Llama / GPT-NeoX).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def rope_angles(positions: Array, head_dim: int, base: float = 10000.0) -> Array:
    """positions [..., T] (int) → angles [..., T, d_h/2] in float32."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    inv_freq = base ** (-jnp.arange(0, head_dim // 2, dtype=jnp.float32) * 2.0 / head_dim)
    return positions.astype(jnp.float32)[..., None] * inv_freq


def apply_rope(x: Array, positions: Array, base: float = 10000.0) -> Array:
    """Rotates x [B, T, H, d_h] at integer positions [T] or [B, T]; returns x's dtype."""
    ang = rope_angles(positions, x.shape[-1], base)  # [(B,) T, d_h/2]
    if ang.ndim == 2:
        ang = ang[None]
    cos, sin = jnp.cos(ang)[:, :, None, :], jnp.sin(ang)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
