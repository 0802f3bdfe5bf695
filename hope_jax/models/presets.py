"""Size presets (D13, D13a): CPU sizes tiny / small and paper sizes 340M / 760M / 1.3B.

`get_config(arch, size)` → DecoderConfig. Architectures: "transformer" (Transformer++: RoPE
attention + SwiGLU), the linear baselines, and Titans "titans_lmm" / "titans_mac" /
"titans_mag" / "titans_mal".
"hope" and "hope_attention" come from hope_jax/layers/hope.py (self-modifying Titans or attention,
with a CMS in the MLP slot); their keyword overrides may also be Table-6 switches.

Sizes: tiny = 2 × 64, 4 heads, T = 64, byte vocabulary (256 + 4 specials); small = 6 × 256,
4 heads, T = 512; 340M = 24 × 1024 (16 heads), 760M = 24 × 1536 (16 heads), 1.3B = 24 × 2048
(8 heads), vocabulary 32000, T = 4096. D13 prints 18 blocks for 1.3B (Atlas Table 7); with a
Transformer++ block that is only 1.04B parameters, so the 1.3B presets here use 24 blocks
(the GDN/Titans Transformer++ 1.3B depth). At paper sizes, recurrent baselines are
parameter-matched to Transformer++: their SwiGLU width shrinks by the mixer's extra parameters.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
from flax import nnx

from hope_jax.layers.attention import AttentionConfig
from hope_jax.layers.linear_mixers import LINEAR_MIXERS
from hope_jax.layers.mlp import SwiGLUConfig, swiglu_hidden
from hope_jax.layers.titans import titans_lmm, titans_mac, titans_mag, titans_mal
from hope_jax.models.decoder import DecoderConfig

BYTE_VOCAB = 256 + 4  # bytes + pad / bos / eos / unk


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


def _transformer(s: Size):
    return AttentionConfig(num_heads=s.num_heads)


def _titans(kind: str):
    def make(s: Size):
        if kind == "lmm":
            return titans_lmm(s.num_heads, chunk_size=s.chunk_size)
        if kind == "mac":  # D26: the MAC segment is the SWA window of the size
            return titans_mac(s.num_heads, segment=s.window, chunk_size=s.chunk_size)
        make_variant = titans_mag if kind == "mag" else titans_mal
        return make_variant(s.num_heads, window=s.window, chunk_size=s.chunk_size)
    return make


def _linear(name: str):
    def make(s: Size):
        return LINEAR_MIXERS[name](s.num_heads, chunk_size=min(s.chunk_size, 16)
                                   if name.startswith("ttt") else s.chunk_size)
    return make


# arch name → (Size → mixer config). The lead registers Hope architectures here.
ARCHS: dict[str, Callable[[Size], object]] = {
    "transformer": _transformer,
    "titans_lmm": _titans("lmm"),
    "titans_mag": _titans("mag"),
    "titans_mal": _titans("mal"),
    "titans_mac": _titans("mac"),
    **{name: _linear(name) for name in LINEAR_MIXERS},
}


# Hope and Hope-Attention (hope_jax.layers.hope): a CMS fills their MLP slot.
HOPE_ARCHS = ("hope", "hope_attention")
DECODER_FIELDS = frozenset(f.name for f in dataclasses.fields(DecoderConfig))


def _mixer_params(mixer, d: int) -> int:
    """Parameters of one mixer at width d (abstract build)."""
    m = nnx.eval_shape(lambda: mixer.build(d, rngs=nnx.Rngs(0)))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(m, nnx.Param))))


def matched_swiglu(mixer, s: Size) -> SwiGLUConfig:
    """SwiGLU width giving the block the parameter budget of a Transformer++ block (rounded to 64)."""
    d = s.d_model
    extra = _mixer_params(mixer, d) - _mixer_params(_transformer(s), d)
    hidden = swiglu_hidden(d) - extra / (3 * d)
    return SwiGLUConfig(hidden=max(64, int(round(hidden / 64)) * 64))


def get_config(arch: str, size: str, **overrides) -> DecoderConfig:
    """The DecoderConfig of `arch` at `size`; keyword overrides replace DecoderConfig fields."""
    if arch in HOPE_ARCHS:  # the self-modifying mixer and the CMS live in hope_jax.layers.hope
        from hope_jax.layers.hope import hope_config
        switches = {k: overrides.pop(k) for k in list(overrides) if k not in DECODER_FIELDS}
        cfg = hope_config(arch, size, **switches)
        return dataclasses.replace(cfg, **overrides) if overrides else cfg
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of "
                         f"{sorted(list(ARCHS) + list(HOPE_ARCHS))}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    s = SIZES[size]
    mixer = ARCHS[arch](s)
    mlp = SwiGLUConfig()
    if s.param_matched and arch != "transformer":
        mlp = matched_swiglu(mixer, s)
    cfg = DecoderConfig(vocab_size=s.vocab_size, d_model=s.d_model, num_blocks=s.num_blocks,
                        mixers=(mixer,), mlp=mlp, max_len=s.max_len, name=f"{arch}-{size}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


__all__ = ["ARCHS", "BYTE_VOCAB", "HOPE_ARCHS", "SIZES", "Size", "get_config", "matched_swiglu"]
