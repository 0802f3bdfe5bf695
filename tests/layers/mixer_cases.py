"""Tiny configurations of every mixer type, shared by the layer tests."""
from __future__ import annotations

from hope_jax import layers

D, H = 32, 2

MIXERS = {
    "attention": layers.AttentionConfig(num_heads=H),
    "attention_swa_persistent": layers.AttentionConfig(num_heads=H, window=5, num_persistent=3),
    "linear_attention": layers.linear_attention(H, chunk_size=4),
    "deltanet": layers.deltanet(H, chunk_size=4),
    "gated_deltanet": layers.gated_deltanet(H, chunk_size=4),
    "ttt_linear": layers.ttt_linear(H, chunk_size=4),
    "ttt_mlp": layers.ttt_mlp(H, chunk_size=4),
    "titans_lmm": layers.titans_lmm(H, chunk_size=4),
    "titans_mag": layers.titans_mag(H, window=5, chunk_size=4),
    "titans_mag_memory_gated": layers.titans_mag(H, window=5, chunk_size=4, gated="memory"),
    "titans_mal": layers.titans_mal(H, window=5, chunk_size=4),
}

MEMORY_MIXERS = ["linear_attention", "deltanet", "gated_deltanet", "ttt_linear", "ttt_mlp",
                 "titans_lmm"]
