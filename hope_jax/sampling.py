"""Sampling with the recurrent state: prefill the prompt once, then one O(1) step per token.

`generate(model, prompt_ids, max_tokens, key, temperature, top_k, top_p)` runs the whole decode loop
as one compiled `lax.scan` over `Decoder.step`, so the memory layers carry their state (memory
parameters, momenta, conv buffers) and attention its KV cache; nothing is recomputed per token.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def filter_logits(logits: Array, temperature: float, top_k: int = 0, top_p: float = 1.0) -> Array:
    """Scaled and truncated logits [..., V]: temperature, then top-k (0 = off), then nucleus top-p
    (the smallest set of most likely tokens whose probability reaches p). Removed entries are -inf.
    temperature 0 keeps only the arg-max (greedy)."""
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        best = jnp.argmax(logits, axis=-1, keepdims=True)
        return jnp.where(jnp.arange(logits.shape[-1]) == best, 0.0, -jnp.inf)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs          # mass of strictly more likely tokens
        keep_sorted = before < top_p                          # the first token is always kept
        keep = jnp.zeros_like(keep_sorted).at[
            tuple(jnp.indices(order.shape)[:-1]) + (order,)].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


@functools.partial(jax.jit, static_argnums=(0, 3, 5, 6, 7))
def _generate(graphdef, state, prompt: Array, max_tokens: int, key: Array, temperature: float,
              top_k: int, top_p: float) -> Array:
    model = nnx.merge(graphdef, state)
    logits, cache = model.prefill(prompt, max_len=prompt.shape[1] + max_tokens)

    def pick(logits, key):
        return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p),
                                      axis=-1).astype(prompt.dtype)

    key, first_key = jax.random.split(key)
    first = pick(logits[:, -1], first_key)

    def body(carry, step_key):
        token, cache = carry
        logits, cache = model.step(token, cache)
        nxt = pick(logits, step_key)
        return (nxt, cache), token

    _, tokens = jax.lax.scan(body, (first, cache), jax.random.split(key, max_tokens))
    return tokens.T                                           # [B, max_tokens]


def generate(model: nnx.Module, prompt_ids: Array, max_tokens: int, key: Array,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Array:
    """Samples `max_tokens` continuation ids [B, max_tokens] of prompt ids [B, P] (P ≥ 1)."""
    prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be [batch, length ≥ 1], got shape {prompt_ids.shape}")
    vocab = model.config.vocab_size
    if int(prompt_ids.max()) >= vocab or int(prompt_ids.min()) < 0:
        raise ValueError(f"prompt token ids must lie in [0, {vocab}); got "
                         f"{int(prompt_ids.min())}..{int(prompt_ids.max())}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_tokens < 1:
        raise ValueError("need temperature ≥ 0, 0 < top_p ≤ 1, top_k ≥ 0 and max_tokens ≥ 1")
    graphdef, state = nnx.split(model)
    return _generate(graphdef, state, prompt_ids, int(max_tokens), key, float(temperature),
                     int(top_k), float(top_p))


__all__ = ["filter_logits", "generate"]
