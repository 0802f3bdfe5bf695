"""Flax NNX layers over hope_jax.core: norms, RoPE, conv, SwiGLU, attention, level mixers, Titans.

Every sequence mixer follows one interface (docs/layers.md): `mixer(u [B, T, d], state=None)
-> (y [B, T, d], new_state)` and `mixer.init_state(batch_size, max_len)`; a config dataclass with
`build(d_model, *, rngs, dtype, param_dtype)` makes it.
"""
from hope_jax.layers.attention import Attention, AttentionConfig, KVCache, causal_attention
from hope_jax.layers.conv import CausalConv
from hope_jax.layers.linear_mixers import (LINEAR_MIXERS, deltanet, gated_deltanet,
                                           linear_attention, ttt_linear, ttt_mlp)
from hope_jax.layers.memory_mixer import MemoryMixer, MemoryMixerConfig, MemoryMixerState
from hope_jax.layers.mlp import SwiGLU, SwiGLUConfig, swiglu_hidden
from hope_jax.layers.norms import HeadRMSNorm, RMSNorm, l2_normalize, rms_normalize
from hope_jax.layers.params import Dense, param
from hope_jax.layers.rope import apply_rope
from hope_jax.layers.titans import (MACState, PairState, TitansMAC, TitansMACConfig, TitansMAG,
                                    TitansMAGConfig, TitansMAL, TitansMALConfig, titans_lmm,
                                    titans_mac, titans_mag, titans_mal)

__all__ = [
    "Attention", "AttentionConfig", "CausalConv", "Dense", "HeadRMSNorm", "KVCache",
    "LINEAR_MIXERS", "MACState", "MemoryMixer", "MemoryMixerConfig", "MemoryMixerState",
    "PairState", "RMSNorm", "SwiGLU", "SwiGLUConfig", "TitansMAC", "TitansMACConfig", "TitansMAG",
    "TitansMAGConfig", "TitansMAL", "TitansMALConfig", "apply_rope", "causal_attention",
    "deltanet", "gated_deltanet", "l2_normalize", "linear_attention", "param", "rms_normalize",
    "swiglu_hidden", "titans_lmm", "titans_mac", "titans_mag", "titans_mal", "ttt_linear",
    "ttt_mlp",
]
