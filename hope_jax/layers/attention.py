"""Causal multi-head softmax attention with RoPE, sliding window, persistent prefix, KV cache.

Design §4 (softmax attention as the non-parametric memory, Eqs. 62–63), §6.6 (Hope-Attention /
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
from typing import Any, NamedTuple

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
      implementation: training-path kernel, one of IMPLEMENTATIONS (`self_attention`).
      block_size: query / key block of the blockwise form (memory O(T · block_size)).
    """

    num_heads: int
    head_dim: int | None = None
    window: int | None = None
    num_persistent: int = 0
    use_rope: bool = True
    rope_base: float = 10000.0
    implementation: str = "auto"
    block_size: int = 512

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> Attention:
        return Attention(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


IMPLEMENTATIONS = ("auto", "dense", "xla", "cudnn", "pallas")
_NEG = -1e30  # finite "−∞": a fully masked block then adds exactly 0 once a visible key is seen
_FAR = 2 ** 30  # position of padding keys: after every query (causal mask) or long before (window)


def _acc_dtype(x: Array) -> jnp.dtype:
    """Logits / softmax dtype: float32, or float64 for float64 inputs."""
    return jnp.promote_types(x.dtype, jnp.float32)


def dense_attention(q: Array, k: Array, v: Array, q_pos: Array, k_pos: Array,
                    window: int | None = None, prefix_k: Array | None = None,
                    prefix_v: Array | None = None) -> Array:
    """The reference: float32 logits [B, H, T, P + S] materialised and masked (Eq. 63).

    q [B, T, H, d_h], k, v [B, S, H, d_h], q_pos [T], k_pos [S] (key i is visible to query t iff
    k_pos_i ≤ q_pos_t and, with a window, k_pos_i > q_pos_t − w); prefix_k, prefix_v [P, H, d_h]
    are visible to every query. Returns [B, T, H, d_h] in v's dtype.
    """
    scale = q.shape[-1] ** -0.5
    acc = _acc_dtype(q)
    logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=acc) * scale
    mask = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= k_pos[None, :] > q_pos[:, None] - window
    logits = jnp.where(mask[None, None], logits, -jnp.inf)
    if prefix_k is not None:
        pre = jnp.einsum("bthd,phd->bhtp", q, prefix_k.astype(q.dtype),
                         preferred_element_type=acc) * scale
        logits = jnp.concatenate([pre, logits], axis=-1)
        v_all = jnp.concatenate([jnp.broadcast_to(prefix_v.astype(v.dtype)[None],
                                                  (v.shape[0],) + prefix_v.shape), v], axis=1)
    else:
        v_all = v
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v_all)


def _block_logits(q: Array, k: Array, q_pos: Array, k_pos: Array, window: int | None) -> Array:
    """Scaled, masked float32 logits [B, H, t, s] of one query block against one key block."""
    s = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=_acc_dtype(q))
    s = s * q.shape[-1] ** -0.5
    mask = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= k_pos[None, :] > q_pos[:, None] - window
    return jnp.where(mask[None, None], s, _NEG)


def _prefix_state(q: Array, prefix_k: Array | None, prefix_v: Array | None):
    """Online-softmax state (m, l, o) [B, H, t], [B, H, t], [B, H, t, d] of the prefix keys, or
    the empty state."""
    b, t, h, d = q.shape
    acc = _acc_dtype(q)
    if prefix_k is None:
        return (jnp.full((b, h, t), _NEG, acc), jnp.zeros((b, h, t), acc),
                jnp.zeros((b, h, t, d), acc))
    s = jnp.einsum("bthd,phd->bhtp", q, prefix_k.astype(q.dtype),
                   preferred_element_type=acc) * d ** -0.5
    m = s.max(-1)
    p = jnp.exp(s - m[..., None])
    o = jnp.einsum("bhtp,phd->bhtd", p, prefix_v.astype(acc))
    return m, p.sum(-1), o


def _online_step(state, s: Array, v: Array):
    """One online-softmax update with logits s [B, H, t, s] and values v [B, s, H, d]."""
    m, l, o = state
    m_new = jnp.maximum(m, s.max(-1))
    corr = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    pv = jnp.einsum("bhts,bshd->bhtd", p.astype(v.dtype), v, preferred_element_type=o.dtype)
    return m_new, l * corr + p.sum(-1), o * corr[..., None] + pv


def _pad_time(x: Array, before: int, after: int) -> Array:
    return jnp.pad(x, ((0, 0), (before, after)) + ((0, 0),) * (x.ndim - 2))


def _flash_blocks(qb, qpb, k, v, k_pos, nb, bq, prefix_k, prefix_v) -> Array:
    """Full causal attention of query blocks qb [nb, B, bq, H, d]: online softmax over the key
    blocks; blocks after the query block are skipped (`lax.cond`), so the work is the causal
    half. Returns [nb, B, H, bq, d] float32."""
    b, _, h, d = k.shape
    kb = k.reshape(b, nb, bq, h, d).swapaxes(0, 1)
    vb = v.reshape(b, nb, bq, h, d).swapaxes(0, 1)
    kpb = k_pos.reshape(nb, bq)

    def query_block(_, xs):
        qi, qpi, i = xs

        def key_block(state, ys):
            kj, vj, kpj, j = ys

            def visit(st):
                return _online_step(st, _block_logits(qi, kj, qpi, kpj, None), vj)

            return jax.lax.cond(j <= i, visit, lambda st: st, state), None

        (m, l, o), _ = jax.lax.scan(key_block, _prefix_state(qi, prefix_k, prefix_v),
                                    (kb, vb, kpb, jnp.arange(nb)))
        return None, o / l[..., None]

    return jax.lax.scan(jax.checkpoint(query_block), None, (qb, qpb, jnp.arange(nb)))[1]


def _band_blocks(qb, qpb, k, v, k_pos, window, nb, bq, prefix_k, prefix_v) -> Array:
    """Sliding-window attention of query blocks: block i sees only the `band` keys before it
    (band = w − 1 rounded up to the block) and its own block. Returns [nb, B, H, bq, d]."""
    band = -(-(window - 1) // bq) * bq
    kp, vp = _pad_time(k, band, 0), _pad_time(v, band, 0)
    kpos = jnp.concatenate([jnp.full((band,), -_FAR, k_pos.dtype), k_pos])

    def query_block(_, xs):
        qi, qpi, i = xs
        start = i * bq  # padded coordinates: the band before query block i, then the block
        kj = jax.lax.dynamic_slice_in_dim(kp, start, band + bq, axis=1)
        vj = jax.lax.dynamic_slice_in_dim(vp, start, band + bq, axis=1)
        kpj = jax.lax.dynamic_slice_in_dim(kpos, start, band + bq)
        _, l, o = _online_step(_prefix_state(qi, prefix_k, prefix_v),
                               _block_logits(qi, kj, qpi, kpj, window), vj)
        return None, o / l[..., None]

    return jax.lax.scan(jax.checkpoint(query_block), None, (qb, qpb, jnp.arange(nb)))[1]


def blockwise_attention(q: Array, k: Array, v: Array, pos: Array, window: int | None = None,
                        prefix_k: Array | None = None, prefix_v: Array | None = None,
                        block_size: int = 512) -> Array:
    """Causal self-attention (keys = the queries' tokens at consecutive positions `pos` [T]) in
    O(T · block) memory, forward and backward; the values of `dense_attention`.

    `lax.scan` over query blocks of `block_size`, each recomputed in the backward pass
    (`jax.checkpoint`), so no [T, T] array exists in either pass. Without a window a query block
    runs an online softmax (flash style) over the key blocks up to its own (`lax.scan`, later
    blocks skipped by `lax.cond`). With a window w it
    attends only to the band of keys that can be visible, the w − 1 tokens before it and its own
    block: O(T · (block + w)) work and memory, never a masked T × T. The persistent prefix
    enters the online softmax's initial state. T is padded to a multiple of the block.
    """
    b, t, h, d = q.shape
    bq = max(1, min(block_size, t))
    nb = -(-t // bq)
    pad = nb * bq - t
    q_pos = jnp.concatenate([pos, pos[-1] + 1 + jnp.arange(pad, dtype=pos.dtype)])
    k_pos = jnp.concatenate([pos, jnp.full((pad,), _FAR, pos.dtype)])
    qb = _pad_time(q, 0, pad).reshape(b, nb, bq, h, d).swapaxes(0, 1)
    kp, vp, qpb = _pad_time(k, 0, pad), _pad_time(v, 0, pad), q_pos.reshape(nb, bq)
    if window is None or window > t:
        ob = _flash_blocks(qb, qpb, kp, vp, k_pos, nb, bq, prefix_k, prefix_v)
    else:
        ob = _band_blocks(qb, qpb, kp, vp, k_pos, window, nb, bq, prefix_k, prefix_v)
    o = ob.transpose(1, 0, 3, 2, 4).reshape(b, nb * bq, h, d)[:, :t]
    return o.astype(v.dtype)


def _library_attention(q: Array, k: Array, v: Array, window: int | None, impl: str) -> Array:
    """`jax.nn.dot_product_attention` (causal, optional local window), impl 'xla' or 'cudnn'."""
    local = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=local,
                                        implementation=impl)


def splash_attention(q: Array, k: Array, v: Array, window: int | None = None) -> Array:
    """TPU Pallas splash attention (causal or local window), q, k, v [B, T, H, d_h]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
    b, t, h, d = q.shape
    one = sm.CausalMask((t, t)) if window is None else sm.LocalMask((t, t), (window - 1, 0), 0)
    kernel = sk.make_splash_mha(sm.MultiHeadMask([one] * h), head_shards=1, q_seq_shards=1)
    heads_first = lambda x: x.swapaxes(1, 2)
    out = jax.vmap(kernel)(heads_first(q * d ** -0.5), heads_first(k), heads_first(v))
    return out.swapaxes(1, 2).astype(v.dtype)


def resolve_implementation(implementation: str, q: Array, has_prefix: bool) -> str:
    """The implementation that runs: 'auto' picks cuDNN on GPU (bf16/fp16, no prefix), splash on
    TPU (T a multiple of 128, no prefix), else 'xla'; an explicit cudnn / pallas request that
    cannot apply (another backend, persistent prefix, dtype, length) falls back to 'xla'."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    platform = jax.default_backend()
    cudnn_ok = platform == "gpu" and not has_prefix and q.dtype in (jnp.bfloat16, jnp.float16)
    pallas_ok = platform == "tpu" and not has_prefix and q.shape[1] % 128 == 0
    if implementation == "auto":
        return "cudnn" if cudnn_ok else "pallas" if pallas_ok else "xla"
    if implementation == "cudnn" and not cudnn_ok or implementation == "pallas" and not pallas_ok:
        return "xla"
    return implementation


def self_attention(q: Array, k: Array, v: Array, pos: Array, window: int | None = None,
                   prefix_k: Array | None = None, prefix_v: Array | None = None, *,
                   implementation: str = "auto", block_size: int = 512) -> Array:
    """Causal self-attention of a fresh sequence (keys = the queries' tokens, positions `pos`
    consecutive): the training path of `Attention`. `implementation` ∈ IMPLEMENTATIONS:

      dense   the masked [T, T] reference (`dense_attention`)
      xla     `jax.nn.dot_product_attention` for T ≤ block_size without prefix (not float64), else
              `blockwise_attention` (O(T · block) memory; windows cost O(T · w))
      cudnn   `jax.nn.dot_product_attention(implementation="cudnn")` (GPU, bf16/fp16)
      pallas  TPU splash attention
      auto    see `resolve_implementation`
    """
    has_prefix = prefix_k is not None
    impl = resolve_implementation(implementation, q, has_prefix)
    if impl == "dense":
        return dense_attention(q, k, v, pos, pos, window, prefix_k, prefix_v)
    if impl == "cudnn":
        return _library_attention(q, k, v, window, "cudnn")
    if impl == "pallas":
        return splash_attention(q, k, v, window)
    if not has_prefix and q.shape[1] <= block_size and q.dtype != jnp.float64:
        return _library_attention(q, k, v, window, "xla")  # (computes its logits in float32)
    return blockwise_attention(q, k, v, pos, window, prefix_k, prefix_v, block_size)


def _blocks(x: Array, n: int, size: int) -> Array:
    """[B, n·size, ...] → [n, B, size, ...]."""
    return x.reshape(x.shape[0], n, size, *x.shape[2:]).swapaxes(0, 1)


def general_blockwise_attention(q: Array, k: Array, v: Array, q_pos: Array, k_pos: Array,
                                window: int | None = None, prefix_k: Array | None = None,
                                prefix_v: Array | None = None, block_size: int = 512) -> Array:
    """`dense_attention` at arbitrary positions in O(T · block) memory: query blocks (scanned,
    rematerialised) run an online softmax over key blocks; a key block none of whose positions
    can be visible to the query block (by the min / max of both blocks' positions) is skipped
    with `lax.cond`. Rows with no visible key at all (which the dense form turns into NaN) give
    a finite average instead."""
    b, t, h, d = q.shape
    bq, bk = max(1, min(block_size, t)), max(1, min(block_size, k.shape[1]))
    nq, nk = -(-t // bq), -(-k.shape[1] // bk)
    pq, pk = nq * bq - t, nk * bk - k.shape[1]
    qp = jnp.concatenate([q_pos, jnp.full((pq,), q_pos[-1], q_pos.dtype)]).reshape(nq, bq)
    kp = jnp.concatenate([k_pos, jnp.full((pk,), _FAR, k_pos.dtype)]).reshape(nk, bk)
    qb = _blocks(_pad_time(q, 0, pq), nq, bq)
    kb, vb = _blocks(_pad_time(k, 0, pk), nk, bk), _blocks(_pad_time(v, 0, pk), nk, bk)

    def query_block(_, xs):
        qi, qpi = xs

        def key_block(state, ys):
            kj, vj, kpj = ys
            seen = kpj.min() <= qpi.max()
            if window is not None:
                seen &= kpj.max() > qpi.min() - window

            def visit(st):
                return _online_step(st, _block_logits(qi, kj, qpi, kpj, window), vj)

            return jax.lax.cond(seen, visit, lambda st: st, state), None

        (_, l, o), _ = jax.lax.scan(key_block, _prefix_state(qi, prefix_k, prefix_v),
                                    (kb, vb, kp))
        return None, o / l[..., None]

    ob = jax.lax.scan(jax.checkpoint(query_block), None, (qb, qp))[1]
    return ob.transpose(1, 0, 3, 2, 4).reshape(b, nq * bq, h, d)[:, :t].astype(v.dtype)


def causal_attention(q: Array, k: Array, v: Array, q_pos: Array, k_pos: Array,
                     window: int | None = None, prefix_k: Array | None = None,
                     prefix_v: Array | None = None, *, block_size: int = 512) -> Array:
    """Masked softmax attention (Eq. 63) at arbitrary positions: decoding against a KV cache or
    ring buffer, prefill into a cache, MAC's segments. Up to `block_size` queries (a decoding
    step, a short prompt, a segment) run `dense_attention` ([T, S] logits, T small); more run
    `general_blockwise_attention` (O(T · block) memory). A fresh sequence goes through
    `self_attention`. Args and result as in `dense_attention`."""
    if q.shape[1] <= block_size:
        return dense_attention(q, k, v, q_pos, k_pos, window, prefix_k, prefix_v)
    return general_blockwise_attention(q, k, v, q_pos, k_pos, window, prefix_k, prefix_v,
                                       block_size)


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
            o = self_attention(q, k, v, q_pos, cfg.window, prefix_k, prefix_v,
                               implementation=cfg.implementation, block_size=cfg.block_size)
            new_state = None
        elif cfg.window is None:
            zero = jnp.zeros((), jnp.int32)
            idx = (zero, start, zero, zero)
            ck = jax.lax.dynamic_update_slice(state.k, k.astype(state.k.dtype), idx)
            cv = jax.lax.dynamic_update_slice(state.v, v.astype(state.v.dtype), idx)
            k_pos = jnp.arange(ck.shape[1], dtype=jnp.int32)
            o = causal_attention(q, ck.astype(q.dtype), cv.astype(v.dtype), q_pos, k_pos,
                                 None, prefix_k, prefix_v, block_size=cfg.block_size)
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
                             self.config.window, prefix_k, prefix_v,
                             block_size=self.config.block_size)
        m = min(t, w)  # only the last w tokens can be seen again
        slots = jnp.mod(q_pos[t - m:], w)
        ck = state.k.at[:, slots].set(k[:, t - m:].astype(state.k.dtype), unique_indices=True)
        cv = state.v.at[:, slots].set(v[:, t - m:].astype(state.v.dtype), unique_indices=True)
        return o, KVCache(ck, cv, start + t)


def configure_attention(config: Any, **fields) -> Any:
    """`config` (a mixer / decoder config dataclass, or a tuple of them) with `fields` (e.g.
    implementation=, block_size=) replaced in every nested `AttentionConfig`, and nowhere else
    (memory mixers have their own `implementation`)."""
    if isinstance(config, tuple):
        return tuple(configure_attention(c, **fields) for c in config)
    if isinstance(config, AttentionConfig):
        return dataclasses.replace(config, **fields)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return config
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        new = configure_attention(value, **fields)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(config, **changes) if changes else config
