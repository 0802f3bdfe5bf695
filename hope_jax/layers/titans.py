"""Titans neural memory and its variants LMM, MAG, MAL (spec §3; Titans arXiv 2501.00663).

The neural memory is a `MemoryMixer` (one level over hope_jax.core, spec §3.1–3.5):
residual 2-layer GELU MLP memory (expansion 4, D26), L2 objective (Titans Eq. 12, D16),
momentum GD with retention (Titans Eqs. 13–14 / 18: `S_t = β S − η ∇ℓ`, `M_t = α M + S_t`),
gradients at the chunk snapshot with post-write running reads (Eqs. 16–18, D2, D26),
projections → causal conv 4 → SiLU, L2-normalised q and k, data-dependent η/α/β per head
(D7, D19 biases), output per-head RMSNorm and gate, N_p = 4 persistent tokens (Eq. 19).

Ablation switches (Titans Table 5, spec §7.7) are `titans_lmm(...)` keyword overrides:
  linear memory      memory="matrix"
  w/o convolution    conv=False
  w/o momentum       momentum=False
  w/o weight decay   retention=False
  w/o persistent     num_persistent=0

Variants (spec §3.6):
  LMM  the memory alone is the mixer.
  MAG  `o = RMSNorm_y(SWA*(x̃)) ⊙ σ(RMSNorm_m(M(x̃)))`, x̃ = [p] || x (Eqs. 26–28; D26 gate).
  MAL  `o = SWA(M(x̃))` (Eqs. 29–31).
Each branch holds its own N_p persistent tokens (they enter only through that branch's
projections, so this is a reparameterisation of one shared prefix plus extra freedom).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.layers.attention import Attention, AttentionConfig
from hope_jax.layers.memory_mixer import MemoryMixer, MemoryMixerConfig
from hope_jax.layers.norms import RMSNorm

Array = jax.Array


def titans_lmm(num_heads: int, **overrides) -> MemoryMixerConfig:
    """The Titans long-term memory module (LMM) as a mixer config (spec §3; D26 defaults)."""
    cfg = dict(memory="mlp", memory_depth=2, memory_expansion=4.0, objective="l2",
               momentum=True, retention=True, delta=False, normalize=False, chunk_size=64,
               read="post", conv=True, conv_kernel=4, qk_l2=True, eta_max=1.0,
               eta_bias=-2.0, alpha_bias=5.0, beta_bias=2.0, gate_init_std=0.0,
               out_norm=True, out_gate=True, num_persistent=4)
    cfg.update(overrides)
    return MemoryMixerConfig(num_heads=num_heads, **cfg)


class PairState(NamedTuple):
    """State of a two-branch mixer: attention KV cache and neural-memory state."""

    attention: object
    memory: object


@dataclasses.dataclass(frozen=True)
class TitansMAGConfig:
    """Memory as a gate (Titans Eqs. 26–28): SWA with persistent prefix ⊗ neural memory."""

    memory: MemoryMixerConfig
    attention: AttentionConfig

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> "TitansMAG":
        return TitansMAG(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


@dataclasses.dataclass(frozen=True)
class TitansMALConfig:
    """Memory as a layer (Titans Eqs. 29–31): the neural memory, then SWA on its output."""

    memory: MemoryMixerConfig
    attention: AttentionConfig

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> "TitansMAL":
        return TitansMAL(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


def titans_mag(num_heads: int, window: int = 512, num_persistent: int = 4,
               **memory_overrides) -> TitansMAGConfig:
    """MAG with sliding window `window` (D26: 512 at paper sizes, 64 on CPU)."""
    mem = titans_lmm(num_heads, num_persistent=num_persistent, **memory_overrides)
    attn = AttentionConfig(num_heads=num_heads, head_dim=mem.head_dim, window=window,
                           num_persistent=num_persistent)
    return TitansMAGConfig(mem, attn)


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
        o = self.norm_y(y) * jax.nn.sigmoid(self.norm_m(m))  # the gate ⊗ (D26)
        return o, None if state is None else PairState(sa, sm)


class TitansMAL(_TwoBranch):
    """`o = SWA(M(u))` (Titans Eqs. 29–31)."""

    def __call__(self, u: Array, state: PairState | None = None) -> tuple[Array, PairState | None]:
        """u [B, T, d] → (o [B, T, d], state)."""
        m, sm = self.memory(u, None if state is None else state.memory)
        o, sa = self.attention(m, None if state is None else state.attention)
        return o, None if state is None else PairState(sa, sm)
