"""From an experiment config to the model's DecoderConfig."""
from __future__ import annotations

import dataclasses

from hope_jax.models.decoder import DecoderConfig
from hope_jax.models.presets import HOPE_ARCHS, get_config


def decoder_config(config, vocab_size: int) -> DecoderConfig:
    """The DecoderConfig of `config.model` with the tokenizer's vocabulary and `config.data.seq_len`.

    Hope's Table-6 switches (`config.model.switches`) apply to "hope" / "hope_attention" only.
    """
    m = config.model
    overrides = dict(vocab_size=int(vocab_size), max_len=int(config.data.seq_len),
                     dtype=m.dtype, param_dtype=m.param_dtype,
                     tie_embeddings=bool(m.tie_embeddings),
                     remat="block" if m.remat in ("block", "full") else "none")
    if m.arch in HOPE_ARCHS:
        overrides.update(m.switches.to_dict())
    cfg = get_config(m.arch, m.size, **overrides)
    return dataclasses.replace(cfg, name=f"{m.arch}-{m.size}")


__all__ = ["decoder_config"]
