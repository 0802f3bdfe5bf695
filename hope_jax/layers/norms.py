"""Normalisations: RMSNorm, per-head RMSNorm, L2 normalisation (design §3.5, §6.6; D11).

Statistics are computed in float32 whatever the input dtype; the result is cast back.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.layers.params import constant, param

Array = jax.Array


def rms_normalize(x: Array, eps: float = 1e-6) -> Array:
    """x / sqrt(mean(x²) + eps) over the last axis, computed in float32."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
    """x / max(‖x‖₂, eps) over the last axis (q and k of every memory mixer; design §3.5)."""
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
    return (x32 / jnp.maximum(norm, eps)).astype(x.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm(x) = x / rms(x) ⊙ g, g [d] initialised to 1 (pre-norm blocks, D11)."""

    def __init__(self, d: int, *, rngs: nnx.Rngs, eps: float = 1e-6, dtype=jnp.float32,
                 param_dtype=jnp.float32, axis_name: str = "norm"):
        self.scale = param(rngs, constant(1.0), (d,), (axis_name,), param_dtype)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        """x [..., d] → [..., d] in the compute dtype."""
        return (rms_normalize(x, self.eps) * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class HeadRMSNorm(nnx.Module):
    """Per-head RMSNorm over d_h with a per-head scale g [H, d_h] (output norm of §3.5, §6.6)."""

    def __init__(self, num_heads: int, head_dim: int, *, rngs: nnx.Rngs, eps: float = 1e-6,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = param(rngs, constant(1.0), (num_heads, head_dim), ("heads", "head_dim"),
                           param_dtype)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        """x [..., H, d_h] → [..., H, d_h] in the compute dtype."""
        return (rms_normalize(x, self.eps) * self.scale[...].astype(jnp.float32)).astype(self.dtype)
