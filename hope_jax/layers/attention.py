"""Causal multi-head softmax attention with RoPE, sliding window, persistent prefix, KV cache.

Spec §4 (softmax attention as the non-parametric memory, Eqs. 62–63), §6.6 (Hope-Attention /
Transformer++: `u → q, k, v`, RoPE on q and k, attention, `W_O`), §3.3 (persistent memory,
Titans Eq. 19), §3.6 (SWA with the persistent prefix, `SWA*` of MAG).

    y_t = Σ_{i ≤ t, i > t − w} softmax_i(q_tᵀ k_i / √d_h) v_i        (Eq. 63; window w optional)

Persistent tokens p [N_p, d] give keys `p W_K` and values `p W_V` (no RoPE) that every query
sees, whatever the window. The KV cache is `KVCache(k, v, position)`: without a window a fixed
buffer of `max_len` slots (token i in slot i); with a window w a ring buffer of w slots (token i
in slot i mod w), so decoding costs O(w) memory and time whatever the context length.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.layers.params import Dense, normal, param
from hope_jax.layers.rope import apply_rope

Array = jax.Array


class KVCache(NamedTuple):
    """k, v [B, S, H, d_h] (k already rotated; S = max_len, or the window w for a ring buffer);
    position: tokens written so far (int32)."""

    k: Array
    v: Array
    position: Array


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Softmax attention mixer (Transformer++ / Hope-Attention / SWA of MAG and MAL).

    Attributes:
      num_heads: H. head_dim: d_h (default d / H).
      window: sliding window w (None = full causal attention).
      num_persistent: N_p persistent-memory tokens (Titans Eq. 19); 0 = none.
      use_rope / rope_base: RoPE on q and k (D36).
    """

    num_heads: int
    head_dim: int | None = None
    window: int | None = None
    num_persistent: int = 0
    use_rope: bool = True
    rope_base: float = 10000.0

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> "Attention":
        return Attention(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


def causal_attention(q: Array, k: Array, v: Array, q_pos: Array, k_pos: Array,
                     window: int | None = None, prefix_k: Array | None = None,
                     prefix_v: Array | None = None) -> Array:
    """Masked softmax attention (Eq. 63), logits and softmax in float32.

    q [B, T, H, d_h], k, v [B, S, H, d_h], q_pos [T], k_pos [S] (key i is visible to query t iff
    k_pos_i ≤ q_pos_t and, with a window, k_pos_i > q_pos_t − w); prefix_k, prefix_v [P, H, d_h]
    are visible to every query. Returns [B, T, H, d_h] in v's dtype.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
    mask = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= k_pos[None, :] > q_pos[:, None] - window
    logits = jnp.where(mask[None, None], logits, -jnp.inf)
    if prefix_k is not None:
        pre = jnp.einsum("bthd,phd->bhtp", q, prefix_k.astype(q.dtype),
                         preferred_element_type=jnp.float32) * scale
        logits = jnp.concatenate([pre, logits], axis=-1)
        v_all = jnp.concatenate([jnp.broadcast_to(prefix_v.astype(v.dtype)[None],
                                                  (v.shape[0],) + prefix_v.shape), v], axis=1)
    else:
        v_all = v
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v_all)


class Attention(nnx.Module):
    """Causal multi-head softmax attention; mixer interface `(u, state) -> (y, state)`."""

    def __init__(self, d_model: int, config: AttentionConfig, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        h = config.num_heads
        dh = config.head_dim or d_model // h
        self.config = config
        self.num_heads, self.head_dim = h, dh
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.w_q = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_k = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_v = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_o = Dense(h * dh, d_model, ("heads", "embed"), **kw)
        self.persistent = (param(rngs, normal(1.0), (config.num_persistent, d_model),
                                 ("persistent", "embed"), param_dtype)
                           if config.num_persistent else None)
        self.dtype = dtype

    def init_state(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache: `max_len` slots, or a ring of `window` slots with a sliding window."""
        slots = max_len if self.config.window is None else self.config.window
        shape = (batch_size, slots, self.num_heads, self.head_dim)
        return KVCache(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype),
                       jnp.zeros((), jnp.int32))

    def _heads(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def _prefix(self):
        if self.persistent is None:
            return None, None
        p = self.persistent[...]
        return self._heads(self.w_k(p)), self._heads(self.w_v(p))  # Titans Eq. 19, no RoPE

    def __call__(self, u: Array, state: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """u [B, T, d] → (y [B, T, d], cache). With a cache, the T tokens continue the sequence."""
        cfg = self.config
        t = u.shape[1]
        q, k, v = self._heads(self.w_q(u)), self._heads(self.w_k(u)), self._heads(self.w_v(u))
        start = jnp.zeros((), jnp.int32) if state is None else state.position
        q_pos = start + jnp.arange(t, dtype=jnp.int32)
        if cfg.use_rope:
            q = apply_rope(q, q_pos, cfg.rope_base)
            k = apply_rope(k, q_pos, cfg.rope_base)
        prefix_k, prefix_v = self._prefix()
        if state is None:
            o = causal_attention(q, k, v, q_pos, q_pos, cfg.window, prefix_k, prefix_v)
            new_state = None
        elif cfg.window is None:
            zero = jnp.zeros((), jnp.int32)
            idx = (zero, start, zero, zero)
            ck = jax.lax.dynamic_update_slice(state.k, k.astype(state.k.dtype), idx)
            cv = jax.lax.dynamic_update_slice(state.v, v.astype(state.v.dtype), idx)
            k_pos = jnp.arange(ck.shape[1], dtype=jnp.int32)
            o = causal_attention(q, ck.astype(q.dtype), cv.astype(v.dtype), q_pos, k_pos,
                                 None, prefix_k, prefix_v)
            new_state = KVCache(ck, cv, start + t)
        else:
            o, new_state = self._ring_attention(q, k, v, q_pos, state, prefix_k, prefix_v)
        y = self.w_o(o.reshape(*o.shape[:2], -1))
        return y, new_state

    def _ring_attention(self, q: Array, k: Array, v: Array, q_pos: Array, state: KVCache,
                        prefix_k, prefix_v) -> tuple[Array, KVCache]:
        """Sliding-window attention against a ring buffer of w slots (slot of token i: i mod w).

        The T new queries see the ring (the w tokens before this call) and the new keys; then the
        last min(T, w) new keys overwrite their slots. Cost O(w + T) per call, O(w) per step.
        """
        w = state.k.shape[1]
        t = q.shape[1]
        start = state.position
        slot = jnp.arange(w, dtype=jnp.int32)
        # position of the token in slot j: the latest i < start with i ≡ j (mod w); an empty
        # slot (i < 0) gets a position after every query, so the causal mask hides it
        ring_pos = start - 1 - jnp.mod(start - 1 - slot, w)
        ring_pos = jnp.where(ring_pos >= 0, ring_pos, jnp.iinfo(jnp.int32).max)
        keys = jnp.concatenate([state.k.astype(q.dtype), k], axis=1)
        values = jnp.concatenate([state.v.astype(v.dtype), v], axis=1)
        o = causal_attention(q, keys, values, q_pos, jnp.concatenate([ring_pos, q_pos]),
                             self.config.window, prefix_k, prefix_v)
        m = min(t, w)  # only the last w tokens can be seen again
        slots = jnp.mod(q_pos[t - m:], w)
        ck = state.k.at[:, slots].set(k[:, t - m:].astype(state.k.dtype), unique_indices=True)
        cv = state.v.at[:, slots].set(v[:, t - m:].astype(state.v.dtype), unique_indices=True)
        return o, KVCache(ck, cv, start + t)
