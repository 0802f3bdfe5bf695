"""Causal depthwise 1-D convolution with a carried buffer for streaming (design §3.5, §6.6).

y_t = Σ_{j=0}^{K−1} w_j ⊙ x_{t−K+1+j} (+ b): each channel is filtered on its own past only.
The state is the last K−1 inputs [B, K−1, C], zeros for a fresh sequence, so a prefill followed by
single-token calls equals one call on the whole sequence.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.layers.params import constant, normal, param

Array = jax.Array


class CausalConv(nnx.Module):
    """Causal depthwise conv, kernel K (default 4), weights w [K, C] initialised near identity."""

    def __init__(self, channels: int, kernel_size: int = 4, *, rngs: nnx.Rngs,
                 use_bias: bool = False, dtype=jnp.float32, param_dtype=jnp.float32):
        self.kernel_size = kernel_size
        self.channels = channels
        std = kernel_size ** -0.5
        self.weight = param(rngs, normal(std), (kernel_size, channels), ("conv", "heads"),
                            param_dtype)
        self.bias = (param(rngs, constant(0.0), (channels,), ("heads",), param_dtype)
                     if use_bias else None)
        self.dtype = dtype

    def init_state(self, batch_size: int) -> Array:
        """The buffer of the last K−1 inputs for a fresh sequence: zeros [B, K−1, C]."""
        return jnp.zeros((batch_size, self.kernel_size - 1, self.channels), self.dtype)

    def __call__(self, x: Array, state: Array | None = None) -> tuple[Array, Array]:
        """x [B, T, C], state [B, K−1, C] or None → (y [B, T, C], new state [B, K−1, C])."""
        b, t, _ = x.shape
        k = self.kernel_size
        x = x.astype(self.dtype)
        if state is None:
            state = self.init_state(b)
        xp = jnp.concatenate([state.astype(self.dtype), x], axis=1)  # [B, K−1+T, C]
        w = self.weight[...].astype(self.dtype)
        y = sum(xp[:, j:j + t] * w[j] for j in range(k))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y, xp[:, t:]
