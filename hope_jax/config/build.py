"""From an experiment config to the model's DecoderConfig."""
from __future__ import annotations

import dataclasses
from typing import Any

from hope_jax.layers.attention import configure_attention
from hope_jax.layers.cms import without_surrogate_writes
from hope_jax.models.decoder import DecoderConfig
from hope_jax.models.presets import get_config

# config.model keys that override a field of the mixer configs (wherever such a field exists).
MIXER_OVERRIDES = ("num_heads", "chunk_size", "chunk_other", "chunk_memory", "scan_group")


def replace_fields(obj: Any, **fields) -> Any:
    """`obj` (a config dataclass, or a tuple of them) with every field named in `fields` replaced,
    recursively through nested config dataclasses (e.g. Titans MAG's memory and attention)."""
    if isinstance(obj, tuple):
        return tuple(replace_fields(o, **fields) for o in obj)
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in fields:
            changes[f.name] = fields[f.name]
        elif dataclasses.is_dataclass(value) or isinstance(value, tuple):
            new = replace_fields(value, **fields)
            if new is not value:
                changes[f.name] = new
    return dataclasses.replace(obj, **changes) if changes else obj


def decoder_config(config, vocab_size: int) -> DecoderConfig:
    """The DecoderConfig of `config.model` with the tokenizer's vocabulary and
    `config.data.seq_len`.

    Hope's Table-6 switches (`config.model.switches`) apply to "hope" (all of them) and
    "hope_attention" (only `cms`); the shape keys d_model / num_blocks / num_heads / chunk sizes /
    mlp_hidden override the size preset when non-zero; `attention` / `attention_block` set the
    kernel and block of every softmax attention (`layers.attention.configure_attention`).
    """
    m = config.model
    overrides = dict(vocab_size=int(vocab_size), max_len=int(config.data.seq_len),
                     dtype=m.dtype, param_dtype=m.param_dtype,
                     tie_embeddings=bool(m.tie_embeddings), scan_blocks=bool(m.scan_blocks),
                     remat=m.remat, remat_segment=int(m.get("remat_segment", 0)))
    if m.arch == "hope":
        overrides.update(m.switches.to_dict())
    elif m.arch == "hope_attention":
        overrides["cms"] = bool(m.switches.cms)
    cfg = get_config(m.arch, m.size, **overrides)
    shape = {k: int(m[k]) for k in ("d_model", "num_blocks") if m[k]}
    mixer = {k: int(m[k]) for k in MIXER_OVERRIDES if m[k]}
    if mixer:
        cfg = dataclasses.replace(cfg, mixers=replace_fields(cfg.mixers, **mixer))
    if m.mlp_hidden:  # the SwiGLU width of the MLP slot, or of every CMS level
        cfg = dataclasses.replace(cfg, mlp=replace_fields(cfg.mlp, hidden=int(m.mlp_hidden)))
    if m.scan_group:  # the in-context CMS levels' scans group their saved states alike
        cfg = dataclasses.replace(cfg, mlp=replace_fields(cfg.mlp, scan_group=int(m.scan_group)))
    attention = {}
    if m.attention != "auto":  # the kernel of every softmax attention, nested ones included
        attention["implementation"] = m.attention
    if m.attention_block:
        attention["block_size"] = int(m.attention_block)
    if attention:
        cfg = configure_attention(cfg, **attention)
    if shape:
        cfg = dataclasses.replace(cfg, **shape)
    if m.cms_objective == "next_token":  # the levels write only by the next-token step
        cfg = dataclasses.replace(cfg, mlp=without_surrogate_writes(cfg.mlp))
    return dataclasses.replace(cfg, name=f"{m.arch}-{m.size}")


__all__ = ["MIXER_OVERRIDES", "decoder_config", "replace_fields"]
