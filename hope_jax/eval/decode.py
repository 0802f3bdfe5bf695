"""Greedy decoding through the recurrent path: `prefill` once, then `step` token by token.

Memory models decode with O(1) state per step; attention keeps a KV cache of L + max_new slots.
One jitted program per (B, L, max_new).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


@partial(nnx.jit, static_argnames=("max_new",))
def greedy_decode(model: nnx.Module, tokens: Array, max_new: int) -> Array:
    """tokens [B, L] int32 (the prompt) → the next `max_new` greedy tokens [B, max_new]."""
    if max_new < 1:
        raise ValueError(f"max_new must be ≥ 1, got {max_new}")
    logits, cache = model.prefill(tokens, tokens.shape[1] + max_new)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

    def body(carry, _):
        tok, cache = carry
        logits, cache = model.step(tok, cache)
        return (jnp.argmax(logits, axis=-1).astype(jnp.int32), cache), tok

    (last, _), toks = jax.lax.scan(body, (first, cache), None, length=max_new - 1)
    return jnp.concatenate([toks.T, last[:, None]], axis=1)
