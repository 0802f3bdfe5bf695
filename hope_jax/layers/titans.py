"""Titans neural memory and its variants LMM, MAG, MAL (design §3; Titans arXiv 2501.00663).

The neural memory is a `MemoryMixer` (one level over hope_jax.core, design §3.1–3.5):
residual 2-layer GELU MLP memory (expansion 4, D26), L2 objective (Titans Eq. 12, D16),
momentum GD with retention (Titans Eqs. 13–14 / 18: `S_t = β S − η ∇ℓ`, `M_t = α M + S_t`),
gradients at the chunk snapshot with post-write running reads (Eqs. 16–18, D2, D26),
projections → causal conv 4 → SiLU, L2-normalised q and k, data-dependent η/α/β per head
(D7, D19 biases), output per-head RMSNorm and gate, N_p = 4 persistent tokens (Eq. 19).

Inner step (D19 revised for a measured reason, docs/layers.md and docs/hope.md, "Stable writes
that matter"): the factories keep D19's `eta_max = 1` with unit-norm values (`v_l2=True`), the
curvature-normalised step η/(1 + ηρ) (`normalize="curvature"`: a token never corrects past its
target, whatever the memory's width) and dampened momentum `S = β S − (1 − β) η' ∇ℓ`. With the
plain step at D19's gates the memory diverged to NaN within ~200 tokens of random input and at
the first batch of real text; the previous cure (`eta_max = 0.1`) kept it finite but nearly inert.
`titans_lmm(H, normalize=False, momentum_dampening=False, v_l2=False)` is D19 exactly.

Ablation switches (Titans Table 5, design §7.7) are `titans_lmm(...)` keyword overrides:
  linear memory      memory="matrix"
  w/o convolution    conv=False
  w/o momentum       momentum=False
  w/o weight decay   retention=False
  w/o persistent     num_persistent=0
Kernels: `implementation=` ("auto", "reference", "xla", "pallas_tpu", "pallas_gpu", "interpret")
is an override of every factory here (LMM, MAG, MAL, MAC); the memory's chunked scan then runs
through `hope_jax.kernels.mlp_chunk_update` (docs/kernels.md, "Layers on the ops").

Variants (design §3.6):
  LMM  the memory alone is the mixer.
  MAG  `o = RMSNorm_y(SWA*(x̃)) ⊙ σ(RMSNorm_m(M(x̃)))`, x̃ = [p] || x (Eqs. 26–28; D26 gate).
  MAL  `o = SWA(M(x̃))` (Eqs. 29–31).
  MAC  memory as context (Eqs. 21–25), segment by segment: retrieve from the memory of the
       previous segments, attend over [p] || retrieved || segment, write the attention output
       into the memory, gate `RMSNorm(y) ⊙ σ(RMSNorm(M*(y)))` (see `TitansMAC`).
Each branch holds its own N_p persistent tokens (they enter only through that branch's
projections, so this is a reparameterisation of one shared prefix plus extra freedom).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.layers.attention import Attention, AttentionConfig, causal_attention
from hope_jax.layers.memory_mixer import MemoryMixer, MemoryMixerConfig, MemoryMixerState
from hope_jax.layers.norms import HeadRMSNorm, RMSNorm, l2_normalize
from hope_jax.layers.params import Dense
from hope_jax.layers.rope import apply_rope
from hope_jax.sharding.sequence_scan import sequence_scan, sequence_shards

Array = jax.Array


TITANS_ETA_MAX = 1.0  # D19, made stable by the curvature-normalised, dampened step


def titans_lmm(num_heads: int, **overrides) -> MemoryMixerConfig:
    """The Titans long-term memory module (LMM) as a mixer config (design §3; D26 defaults, with
    unit-norm values, the curvature-normalised step and dampened momentum; see above)."""
    cfg = dict(memory="mlp", memory_depth=2, memory_expansion=4.0, objective="l2",
               momentum=True, momentum_dampening=True, retention=True, delta=False,
               normalize="curvature", chunk_size=64,
               read="post", conv=True, conv_kernel=4, qk_l2=True, v_l2=True,
               eta_max=TITANS_ETA_MAX,
               eta_bias=-2.0, alpha_bias=5.0, beta_bias=2.0, gate_init_std=0.0,
               out_norm=True, out_gate=True, num_persistent=4)
    cfg.update(overrides)
    return MemoryMixerConfig(num_heads=num_heads, **cfg)


class PairState(NamedTuple):
    """State of a two-branch mixer: attention KV cache and neural-memory state."""

    attention: object
    memory: object


GATED = ("attention", "memory")  # the branch under the sigmoid of MAG's / MAC's gate ⊗


def _check_gated(owner: str, gated: str) -> None:
    if gated not in GATED:
        raise ValueError(f"{owner}.gated must be one of {GATED}, got {gated!r}")


def _gate(y: Array, m: Array, gated: str) -> Array:
    """The gate ⊗ of the normalised attention output y and memory read m: "attention" (D26)
    σ(m) gates y; "memory" σ(y) gates m, the memory carrying the content."""
    return y * jax.nn.sigmoid(m) if gated == "attention" else m * jax.nn.sigmoid(y)


@dataclasses.dataclass(frozen=True)
class TitansMAGConfig:
    """Memory as a gate (Titans Eqs. 26–28): SWA with persistent prefix ⊗ neural memory.

    `gated`: which branch the sigmoid is applied to, the other carrying the content. The paper
    normalises both branches and applies "a non-linearity σ" without saying to which. D26 (the
    default, "attention"): o = RMSNorm(y) ⊙ σ(RMSNorm(m)), the memory gates the attention;
    "memory": o = RMSNorm(m) ⊙ σ(RMSNorm(y)), the attention gates the memory's content."""

    memory: MemoryMixerConfig
    attention: AttentionConfig
    gated: str = "attention"

    def __post_init__(self):
        _check_gated("TitansMAGConfig", self.gated)

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> TitansMAG:
        return TitansMAG(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


@dataclasses.dataclass(frozen=True)
class TitansMALConfig:
    """Memory as a layer (Titans Eqs. 29–31): the neural memory, then SWA on its output."""

    memory: MemoryMixerConfig
    attention: AttentionConfig

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> TitansMAL:
        return TitansMAL(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


def titans_mag(num_heads: int, window: int = 512, num_persistent: int = 4,
               gated: str = "attention", **memory_overrides) -> TitansMAGConfig:
    """MAG with sliding window `window` (D26: 512 at paper sizes, 64 on CPU); `gated`: the
    branch under the sigmoid (`TitansMAGConfig`)."""
    mem = titans_lmm(num_heads, num_persistent=num_persistent, **memory_overrides)
    attn = AttentionConfig(num_heads=num_heads, head_dim=mem.head_dim, window=window,
                           num_persistent=num_persistent)
    return TitansMAGConfig(mem, attn, gated)


def titans_mal(num_heads: int, window: int = 512, num_persistent: int = 4,
               **memory_overrides) -> TitansMALConfig:
    """MAL: persistent prefix into the memory, SWA (no prefix) on the memory's output."""
    mem = titans_lmm(num_heads, num_persistent=num_persistent, **memory_overrides)
    attn = AttentionConfig(num_heads=num_heads, head_dim=mem.head_dim, window=window)
    return TitansMALConfig(mem, attn)


class _TwoBranch(nnx.Module):
    def __init__(self, d_model: int, config, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.config = config
        self.attention = Attention(d_model, config.attention, **kw)
        self.memory = MemoryMixer(d_model, config.memory, **kw)

    def init_state(self, batch_size: int, max_len: int) -> PairState:
        return PairState(self.attention.init_state(batch_size, max_len),
                         self.memory.init_state(batch_size, max_len))


class TitansMAG(_TwoBranch):
    """`o = RMSNorm_y(y) ⊙ σ(RMSNorm_m(m))`, y = SWA*(u), m = M(u) (Titans Eq. 28; D26)."""

    def __init__(self, d_model: int, config: TitansMAGConfig, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        super().__init__(d_model, config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm_y = RMSNorm(d_model, **kw)
        self.norm_m = RMSNorm(d_model, **kw)

    def __call__(self, u: Array, state: PairState | None = None) -> tuple[Array, PairState | None]:
        """u [B, T, d] → (o [B, T, d], state)."""
        y, sa = self.attention(u, None if state is None else state.attention)
        m, sm = self.memory(u, None if state is None else state.memory)
        o = _gate(self.norm_y(y), self.norm_m(m), self.config.gated)
        return o, None if state is None else PairState(sa, sm)


class TitansMAL(_TwoBranch):
    """`o = SWA(M(u))` (Titans Eqs. 29–31)."""

    def __call__(self, u: Array, state: PairState | None = None) -> tuple[Array, PairState | None]:
        """u [B, T, d] → (o [B, T, d], state)."""
        m, sm = self.memory(u, None if state is None else state.memory)
        o, sa = self.attention(m, None if state is None else state.attention)
        return o, None if state is None else PairState(sa, sm)


# -- MAC: memory as context (Titans Eqs. 21–25) --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TitansMACConfig:
    """Memory as context (Titans Eqs. 21–25): segments of `segment` tokens (D26: 512 at paper
    sizes, 64 on CPU). `attention` holds the N_p persistent tokens (no window: attention is full
    inside a segment); the memory has no prefix of its own and its chunk must divide the segment.
    `gated`: the branch of the final gate (Eq. 25) under the sigmoid, as `TitansMAGConfig`."""

    memory: MemoryMixerConfig
    attention: AttentionConfig
    segment: int = 512
    gated: str = "attention"

    def __post_init__(self):
        _check_gated("TitansMACConfig", self.gated)
        c = self.segment
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"TitansMACConfig.segment must be a positive int, got {c!r}")
        if c % self.memory.chunk_size:
            raise ValueError(f"the MAC segment ({c}) must be a multiple of the memory chunk "
                             f"({self.memory.chunk_size})")
        if self.memory.num_persistent:
            raise ValueError("MAC keeps its persistent tokens in the attention "
                             "(attention.num_persistent); set memory num_persistent=0")
        if self.attention.window is not None:
            raise ValueError("MAC attends over whole segments; attention.window must be None")

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> TitansMAC:
        return TitansMAC(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


def titans_mac(num_heads: int, segment: int = 512, num_persistent: int = 4,
               gated: str = "attention", **memory_overrides) -> TitansMACConfig:
    """MAC with segment length `segment` (D26) and N_p persistent tokens in the attention;
    `gated`: the branch under the final gate's sigmoid (`TitansMACConfig`)."""
    mem = titans_lmm(num_heads, num_persistent=0, **memory_overrides)
    attn = AttentionConfig(num_heads=num_heads, head_dim=mem.head_dim,
                           num_persistent=num_persistent)
    return TitansMACConfig(mem, attn, segment, gated)


class MACState(NamedTuple):
    """Decode state of MAC (leaves [B, ...]; no leaf grows with the context).

    k, v: keys and values of the current segment [B, 2·C_seg, H, d_h]: slots [0, C_seg) the
      retrieved memory tokens h_j, slots [C_seg, 2·C_seg) the segment's tokens (slot j = token
      j of the segment; k already rotated).
    retrieve: the memory at the start of the current segment, M_{t−1} (Eq. 21), [B, H, …].
    memory: the neural memory's state (running, written with the attention outputs).
    position: tokens seen (int32), or None for a fresh sequence.
    """

    k: Array
    v: Array
    retrieve: tuple
    memory: MemoryMixerState
    position: Array | None = None


class TitansMAC(nnx.Module):
    """Memory as context (Titans Eqs. 21–25), per segment S of C_seg tokens:

        h   = W_h RMSNorm_head(M*_{t−1}(L2(S W_Q)))  retrieve with the segment's queries (Eq. 21)
        y   = Attn([p] || h || S)                   causal attention inside the segment (Eqs. 22–23)
        M_t = M_{t−1} written with y                the memory learns the attention output (Eq. 24)
        o   = RMSNorm(y) ⊙ σ(RMSNorm(M*(y)))        the gate ⊗ of D26 (Eq. 25)

    Choices where the papers are silent (docs/layers.md):
    * h_j (retrieved with token j's query) is visible to queries i ≥ j only, like token j itself,
      so MAC is causal (design §3.7, check 6); the persistent tokens are visible to every query. h_j
      and token j share position j for RoPE.
    * RoPE positions count from the start of each segment (0 … C_seg − 1): attention never looks
      past its segment, and the persistent keys carry no rotation, so absolute positions would
      only change how a query meets the persistent tokens, and put every segment after the
      training length out of distribution. With segment positions every segment is read alike,
      and a sequence can be cut at any segment boundary (`state_alignment`).
    * The retrieved vectors are mapped into token space by their own W_Q, head norm and W_h; the
      memory's own projections, conv and gates act on y.
    * M*(y) is the memory mixer's usual post-write running read (D2, D26): token j reads the
      memory after writing y_{≤j}, never later tokens of its segment (the end-of-segment M_t would
      leak them).
    * Decoding: a step appends the token (and its h_j) to the current segment's cache of
      2·C_seg slots; at a segment start the retrieval memory moves to the running memory. A call
      with a state that does not start from a fresh sequence runs token by token.
    """

    def __init__(self, d_model: int, config: TitansMACConfig, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.config = config
        self.attention = Attention(d_model, config.attention, **kw)
        self.memory = MemoryMixer(d_model, config.memory, **kw)
        h, dh = self.memory.num_heads, self.memory.head_dim
        self.num_heads, self.head_dim, self.dtype = h, dh, dtype
        self.w_retrieve = Dense(d_model, h * dh, ("embed", "heads"), **kw)  # W_Q of Eq. 21
        self.retrieve_norm = HeadRMSNorm(h, dh, **kw)
        self.w_retrieved = Dense(h * dh, d_model, ("heads", "embed"), **kw)
        self.norm_y = RMSNorm(d_model, **kw)
        self.norm_m = RMSNorm(d_model, **kw)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state_alignment(self) -> int:
        """The segment: at a segment boundary the state is the retrieval memory (= the running
        memory) and nothing of the segment's cache is needed, and positions restart with every
        segment, so a fresh-form call from there reads on exactly (the inner `MemoryMixer` adds
        its chunk)."""
        return self.config.segment

    @property
    def document_alignment(self) -> int:
        """1: when a new text begins (`Decoder.document_alignment`), MAC's segments restart with
        it and the memory is carried, as a fresh sequence reads from a non-initial memory; only
        the memory's chunks (the inner `MemoryMixer`) constrain where."""
        return 1

    def init_state(self, batch_size: int, max_len: int = 0) -> MACState:
        a = self.attention
        shape = (batch_size, 2 * self.config.segment, a.num_heads, a.head_dim)
        memory = self.memory.init_state(batch_size, max_len)
        return MACState(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype),
                        memory.level.memory, memory, None)

    # -- pieces --------------------------------------------------------------------------------
    def _retrieve(self, u: Array, params: tuple) -> Array:
        """h = W_h RMSNorm_head(M(L2(u W_Q))) [B, L, d] read at memory `params` ([B, H, …])."""
        b, length, _ = u.shape
        q = l2_normalize(self.w_retrieve(u).reshape(b, length, self.num_heads, self.head_dim))
        read = jax.vmap(jax.vmap(self.memory.level.memory.apply, in_axes=(0, 1), out_axes=1))
        r = read(params, q.astype(jnp.float32))  # M*_{t−1}(q): a read, no write (Eq. 21)
        r = self.retrieve_norm(r).reshape(b, length, -1).astype(self.dtype)
        return self.w_retrieved(r)

    def _kv(self, x: Array, pos: Array) -> tuple[Array, Array]:
        a = self.attention
        k, v = a._heads(a.w_k(x)), a._heads(a.w_v(x))
        if a.config.use_rope:
            k = apply_rope(k, pos, a.config.rope_base)
        return k, v

    def _attend(self, u: Array, pos: Array, k: Array, v: Array, k_pos: Array) -> Array:
        """Queries of tokens u at `pos` over the persistent prefix and keys k at k_pos (causal)."""
        a = self.attention
        q = a._heads(a.w_q(u))
        if a.config.use_rope:
            q = apply_rope(q, pos, a.config.rope_base)
        prefix_k, prefix_v = a._prefix()
        o = causal_attention(q, k, v, pos, k_pos, None, prefix_k, prefix_v)
        return a.w_o(o.reshape(*o.shape[:2], -1))

    def _gate(self, y: Array, memory_state: MemoryMixerState) -> tuple[Array, MemoryMixerState]:
        m, memory_state = self.memory(y, memory_state)  # write y, read M*(y) (Eqs. 24–25)
        return _gate(self.norm_y(y), self.norm_m(m), self.config.gated), memory_state

    def _segment(self, u: Array, memory_state: MemoryMixerState):
        """A segment (or its first L tokens) from a segment boundary: u [B, L, d]; RoPE positions
        0 … L − 1 within the segment."""
        pos = jnp.arange(u.shape[1], dtype=jnp.int32)
        h = self._retrieve(u, memory_state.level.memory)
        (kh, vh), (ks, vs) = self._kv(h, pos), self._kv(u, pos)
        k, v = jnp.concatenate([kh, ks], axis=1), jnp.concatenate([vh, vs], axis=1)
        y = self._attend(u, pos, k, v, jnp.concatenate([pos, pos]))
        o, new_memory = self._gate(y, memory_state)
        return o, new_memory, (kh, vh, ks, vs)

    def _aligned(self, memory_state: MemoryMixerState) -> MemoryMixerState:
        """At a segment boundary (a multiple of the memory chunk) the memory's snapshot equals
        its running state, so its position can be dropped: the next segment takes the aligned
        (static) path of the chunked scan."""
        return memory_state._replace(level=memory_state.level._replace(position=None))

    # -- calls ---------------------------------------------------------------------------------
    def _from_start(self, u: Array, state: MACState) -> tuple[Array, MACState]:
        """A fresh sequence: full segments in a scan, then the partial last segment."""
        b, t, d = u.shape
        c = self.config.segment
        n_full, r = divmod(t, c)
        memory_state, outs = state.memory, []
        if n_full:
            def body(ms, x):
                o, ms, _ = self._segment(x, ms)
                return self._aligned(ms), o

            segments = jnp.moveaxis(u[:, :n_full * c].reshape(b, n_full, c, d), 1, 0)
            memory_state, o = jax.lax.scan(body, self._aligned(memory_state), segments)
            outs.append(jnp.moveaxis(o, 0, 1).reshape(b, n_full * c, d))
        retrieve, k, v = memory_state.level.memory, state.k, state.v
        if r:
            o, memory_state, (kh, vh, ks, vs) = self._segment(u[:, n_full * c:], memory_state)
            outs.append(o)
            k = k.at[:, :r].set(kh.astype(k.dtype)).at[:, c:c + r].set(ks.astype(k.dtype))
            v = v.at[:, :r].set(vh.astype(v.dtype)).at[:, c:c + r].set(vs.astype(v.dtype))
        position = jnp.asarray(t, jnp.int32)
        level = memory_state.level._replace(position=position)
        state = MACState(k, v, retrieve, memory_state._replace(level=level), position)
        return jnp.concatenate(outs, axis=1), state

    def _step(self, u: Array, state: MACState) -> tuple[Array, MACState]:
        """One token u [B, 1, d] at position p against the current segment's cache (O(C_seg))."""
        c = self.config.segment
        p = state.position
        j = p % c  # slot of the token in its segment
        memory_state = state.memory
        # M_{t−1} at a new segment
        retrieve = jax.tree.map(lambda new, old: jnp.where(j == 0, new, old),
                                memory_state.level.memory, state.retrieve)
        pos = j[None]  # RoPE position within the segment
        h = self._retrieve(u, retrieve)
        (kh, vh), (ks, vs) = self._kv(h, pos), self._kv(u, pos)
        zero = jnp.zeros((), jnp.int32)
        put = lambda buf, x, at: jax.lax.dynamic_update_slice(
            buf, x.astype(buf.dtype), (zero, at, zero, zero))
        k = put(put(state.k, kh, j), ks, j + c)
        v = put(put(state.v, vh, j), vs, j + c)
        slot_pos = jnp.arange(c, dtype=jnp.int32)  # stale slots lie after j: masked
        y = self._attend(u, pos, k.astype(u.dtype), v.astype(u.dtype),
                         jnp.concatenate([slot_pos, slot_pos]))
        o, memory_state = self._gate(y, memory_state)
        return o, MACState(k, v, retrieve, memory_state, p + 1)

    def __call__(self, u: Array, state: MACState | None = None) -> tuple[Array, MACState | None]:
        """u [B, T, d] → (o [B, T, d], state). state None = a fresh sequence (training)."""
        if state is None:
            start = self.init_state(u.shape[0])
            if sequence_shards(u.shape[1], self.config.segment) > 1:
                # split over the mesh's `sequence` axis: each device reads its whole segments
                # from the MAC state the previous device hands on (segment positions make every
                # such state a fresh start, `state_alignment`)
                graphdef, weights = nnx.split(self)
                read = lambda w, st, x: nnx.merge(graphdef, w)._from_start(x, st)
                return sequence_scan(read, weights, start, u, align=self.config.segment)[0], None
            return self._from_start(u, start)[0], None
        if state.position is None:
            return self._from_start(u, state)
        if u.shape[1] == 1:
            return self._step(u, state)

        def body(s, x):  # streaming from mid-sequence: token by token
            o, s = self._step(x[:, None], s)
            return s, o[:, 0]

        state, o = jax.lax.scan(body, state, jnp.moveaxis(u, 1, 0))
        return jnp.moveaxis(o, 0, 1), state
