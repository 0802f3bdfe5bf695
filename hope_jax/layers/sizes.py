"""The size presets (D13, D13a): CPU sizes tiny / small and paper sizes 340M / 760M / 1.3B.

Sizes: tiny = 2 × 64, 4 heads, T = 64, byte vocabulary (256 + 4 specials); small = 6 × 256,
4 heads, T = 512; 340M = 24 × 1024 (16 heads), 760M = 24 × 1536 (16 heads), 1.3B = 24 × 2048
(8 heads), vocabulary 32000, T = 4096. D13 prints 18 blocks for 1.3B (Atlas Table 7); with a
Transformer++ block that is only 1.04B parameters, so the 1.3B presets here use 24 blocks
(the GDN/Titans Transformer++ 1.3B depth). At paper sizes, recurrent mixers are
parameter-matched to Transformer++: their SwiGLU width shrinks by the mixer's extra parameters
(`matched_swiglu`).

The table lives with the layers because both the Hope block (`layers/hope.py`) and the decoder
presets (`models/presets.py`) read it.
"""
from __future__ import annotations

import dataclasses
import math

import jax
from flax import nnx

from hope_jax.data.byte_tokenizer import ByteTokenizer
from hope_jax.layers.attention import AttentionConfig
from hope_jax.layers.mlp import SwiGLUConfig, swiglu_hidden

BYTE_VOCAB = ByteTokenizer.vocab_size  # the byte tokenizer's table: 256 bytes + 4 specials


@dataclasses.dataclass(frozen=True)
class Size:
    num_blocks: int
    d_model: int
    num_heads: int
    max_len: int
    vocab_size: int
    chunk_size: int       # memory chunk C (Titans / baselines)
    window: int           # SWA window of MAG / MAL, segment of MAC (D26)
    param_matched: bool   # shrink recurrent baselines' SwiGLU to Transformer++'s block budget


SIZES = {
    "tiny": Size(2, 64, 4, 64, BYTE_VOCAB, 8, 64, False),
    "small": Size(6, 256, 4, 512, BYTE_VOCAB, 64, 64, False),
    "340m": Size(24, 1024, 16, 4096, 32000, 64, 512, True),
    "760m": Size(24, 1536, 16, 4096, 32000, 64, 512, True),
    "1.3b": Size(24, 2048, 8, 4096, 32000, 64, 512, True),
}


def attention_mixer(s: Size) -> AttentionConfig:
    """The Transformer++ mixer of a size (the parameter budget `matched_swiglu` matches)."""
    return AttentionConfig(num_heads=s.num_heads)


def mixer_params(mixer, d: int) -> int:
    """Parameters of one mixer at width d (abstract build)."""
    m = nnx.eval_shape(lambda: mixer.build(d, rngs=nnx.Rngs(0)))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(m, nnx.Param))))


def matched_swiglu(mixer, s: Size) -> SwiGLUConfig:
    """SwiGLU width giving the block the parameter budget of a Transformer++ block (rounded to
    64)."""
    d = s.d_model
    extra = mixer_params(mixer, d) - mixer_params(attention_mixer(s), d)
    hidden = swiglu_hidden(d) - extra / (3 * d)
    return SwiGLUConfig(hidden=max(64, int(round(hidden / 64)) * 64))


__all__ = ["BYTE_VOCAB", "SIZES", "Size", "attention_mixer", "matched_swiglu", "mixer_params"]
