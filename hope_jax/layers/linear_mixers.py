"""Linear recurrent baselines, each DEFINED AS A LEVEL over hope_jax.core (design §4).

Each factory returns a `MemoryMixerConfig`; `.build(d, rngs=...)` gives a `MemoryMixer`.
No mixer here has recurrence code of its own: the level's write and read are the recurrence.

| mixer            | memory       | objective | inner optimizer                          | read |
|------------------|--------------|-----------|------------------------------------------|------|
| linear attention | matrix       | dot       | GD, η = 1, no retention                  | post |
| DeltaNet         | matrix       | dot       | DGD, no momentum / retention / normalise | post |
| Gated DeltaNet   | matrix       | dot       | DGD gated (α on the k kᵀ term)           | post |
| TTT-Linear       | matrix       | l2        | GD, no retention, chunk 16               | post |
| TTT-MLP          | residual MLP | l2        | GD, no retention, chunk 16               | post |

Every factory takes `implementation=` (an override like any other): the chunked scan runs
through `hope_jax.kernels` (`linear_chunk_update`; TTT-MLP `mlp_chunk_update`), see
`memory_mixer.kernel_route` and docs/kernels.md.

(DeltaNet as dot + DGD: `M(I − η k kᵀ) + η v kᵀ`, exact at any chunk size because the dot
gradient does not depend on the state; tests/core/test_scan_identities.py.)
"""
from __future__ import annotations

from hope_jax.layers.memory_mixer import MemoryMixerConfig


def _config(num_heads: int, overrides: dict, **defaults) -> MemoryMixerConfig:
    defaults.update(overrides)
    return MemoryMixerConfig(num_heads=num_heads, **defaults)


def linear_attention(num_heads: int, **overrides) -> MemoryMixerConfig:
    """Causal linear attention, `M_t = M_{t−1} + v_t k_tᵀ`, `y_t = M_t q_t` (design §4, Eqs.
    14–18)."""
    return _config(num_heads, overrides, memory="matrix", objective="dot", retention=False,
                   fixed_eta=1.0, memory_init="zeros", chunk_size=64)


def deltanet(num_heads: int, **overrides) -> MemoryMixerConfig:
    """DeltaNet, `M_t = M_{t−1}(I − η_t k_t k_tᵀ) + η_t v_t k_tᵀ` (design §4, Eq. 65); η = σ(·)."""
    return _config(num_heads, overrides, memory="matrix", objective="dot", delta=True,
                   momentum=False, retention=False, normalize=False, eta_bias=0.0,
                   memory_init="zeros", chunk_size=64)


def gated_deltanet(num_heads: int, **overrides) -> MemoryMixerConfig:
    """Gated DeltaNet, `M_t = α_t M_{t−1}(I − η_t k_t k_tᵀ) + η_t v_t k_tᵀ` (design §4)."""
    return _config(num_heads, overrides, memory="matrix", objective="dot", delta=True,
                   momentum=False, retention=True, normalize=False, gated=True, eta_bias=0.0,
                   memory_init="zeros", chunk_size=64)


def ttt_linear(num_heads: int, **overrides) -> MemoryMixerConfig:
    """TTT-Linear: mini-batch GD on ½‖W k − v‖², grads at the mini-batch start, b = 16 (design
    §4)."""
    return _config(num_heads, overrides, memory="matrix", objective="l2", retention=False,
                   chunk_size=16)


def ttt_mlp(num_heads: int, **overrides) -> MemoryMixerConfig:
    """TTT-MLP: as TTT-Linear with the residual 2-layer GELU MLP memory, hidden 4 d_h (design
    §4)."""
    return _config(num_heads, overrides, memory="mlp", memory_expansion=4.0, objective="l2",
                   retention=False, chunk_size=16)


LINEAR_MIXERS = {
    "linear_attention": linear_attention,
    "deltanet": deltanet,
    "gated_deltanet": gated_deltanet,
    "ttt_linear": ttt_linear,
    "ttt_mlp": ttt_mlp,
}

__all__ = ["LINEAR_MIXERS", "MemoryMixerConfig", "deltanet", "gated_deltanet",
           "linear_attention", "ttt_linear", "ttt_mlp"]
