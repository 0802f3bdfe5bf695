"""Decoder presets: `get_config(arch, size)` → DecoderConfig.

Architectures: "transformer" (Transformer++: RoPE attention + SwiGLU), the linear baselines,
Titans "titans_lmm" / "titans_mac" / "titans_mag" / "titans_mal", and "hope" / "hope_attention"
(`hope_config`: the Hope block of hope_jax/layers/hope.py, self-modifying Titans or attention with
a CMS in the MLP slot; their keyword overrides may also be Table-6 switches).

The sizes (tiny, small, 340m, 760m, 1.3b) are `hope_jax.layers.sizes.SIZES`. At paper sizes,
recurrent baselines are parameter-matched to Transformer++: their SwiGLU width shrinks by the
mixer's extra parameters.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hope_jax.layers.hope import hope_block
from hope_jax.layers.linear_mixers import LINEAR_MIXERS
from hope_jax.layers.mlp import SwiGLUConfig
from hope_jax.layers.self_modifying import SelfModifyingConfig
from hope_jax.layers.sizes import BYTE_VOCAB, SIZES, Size, attention_mixer, matched_swiglu
from hope_jax.layers.titans import titans_lmm, titans_mac, titans_mag, titans_mal
from hope_jax.models.decoder import DecoderConfig


def _titans(kind: str):
    def make(s: Size):
        if kind == "lmm":
            return titans_lmm(s.num_heads, chunk_size=s.chunk_size)
        if kind == "mac":  # D26: the MAC segment is the SWA window of the size; σ on the
            # attention branch as for MAG. Trained with carried memories (the architecture's
            # default, config/arch_defaults.py) it beats the printed gate at 1×, 4× and 16× T, and
            # its writes are worth +0.137 bpb at 4× T against +0.027 (docs/design.md, D26)
            return titans_mac(s.num_heads, segment=s.window, chunk_size=s.chunk_size,
                              gated="memory")
        if kind == "mag":  # σ on the attention branch: the memory carries the content. The
            # printed gate (D26) left the writes almost unused: write ablation at 4× T +0.019
            # vs +0.143 bpb (docs/design.md, D26, "Measured deviation (MAG's gate)")
            return titans_mag(s.num_heads, window=s.window, chunk_size=s.chunk_size,
                              gated="memory")
        return titans_mal(s.num_heads, window=s.window, chunk_size=s.chunk_size)
    return make


def _linear(name: str):
    def make(s: Size):
        return LINEAR_MIXERS[name](s.num_heads, chunk_size=min(s.chunk_size, 16)
                                   if name.startswith("ttt") else s.chunk_size)
    return make


# arch name → (Size → mixer config); Hope's two architectures are HOPE_ARCHS below.
ARCHS: dict[str, Callable[[Size], object]] = {
    "transformer": attention_mixer,
    "titans_lmm": _titans("lmm"),
    "titans_mag": _titans("mag"),
    "titans_mal": _titans("mal"),
    "titans_mac": _titans("mac"),
    **{name: _linear(name) for name in LINEAR_MIXERS},
}


# Hope and Hope-Attention (hope_jax.layers.hope): a CMS fills their MLP slot.
HOPE_ARCHS = ("hope", "hope_attention")
# Every architecture `get_config` builds (config validation reads this table).
ARCH_NAMES = tuple(sorted(list(ARCHS) + list(HOPE_ARCHS)))
DECODER_FIELDS = frozenset(f.name for f in dataclasses.fields(DecoderConfig))


def hope_config(arch: str = "hope", size: str = "tiny", **switches) -> DecoderConfig:
    """DecoderConfig for "hope" or "hope_attention" at a size, with Table-6 ablation switches
    (`hope_jax.layers.hope.ABLATIONS`)."""
    mixer, mlp = hope_block(arch, size, **switches)
    s = SIZES[size]
    return DecoderConfig(vocab_size=s.vocab_size, d_model=s.d_model, num_blocks=s.num_blocks,
                         mixers=(mixer,), mlp=mlp, max_len=s.max_len, name=f"{arch}-{size}")


def with_switches(config: DecoderConfig, **switches) -> DecoderConfig:
    """A Hope DecoderConfig with some mixer switches changed (e.g. `dgd=False`)."""
    mixers = tuple(dataclasses.replace(m, **switches) if isinstance(m, SelfModifyingConfig) else m
                   for m in config.mixers)
    return dataclasses.replace(config, mixers=mixers)


def get_config(arch: str, size: str, **overrides) -> DecoderConfig:
    """The DecoderConfig of `arch` at `size`; keyword overrides replace DecoderConfig fields."""
    if arch in HOPE_ARCHS:  # the self-modifying mixer and the CMS live in hope_jax.layers.hope
        switches = {k: overrides.pop(k) for k in list(overrides) if k not in DECODER_FIELDS}
        cfg = hope_config(arch, size, **switches)
        return dataclasses.replace(cfg, **overrides) if overrides else cfg
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {list(ARCH_NAMES)}")
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


__all__ = ["ARCHS", "ARCH_NAMES", "BYTE_VOCAB", "HOPE_ARCHS", "SIZES", "Size",
           "get_config", "hope_config", "matched_swiglu", "with_switches"]
