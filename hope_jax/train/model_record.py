"""The model record: what a checkpoint says about how its model was built.

A checkpoint stores its run's config, and the config is rebuilt into a model when the run resumes
or is evaluated. If hope_jax has since changed what a config builds (a preset's default, say the
gate of Titans MAG moving from the attention branch to the memory branch) and the parameters keep
their shapes, the old parameters would load into a different function without a word. So each
checkpoint also records the full `DecoderConfig` its config built (every mixer and MLP field), and
restoring rebuilds the saved config with the present library and compares the two
(docs/training.md, "The model record").
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hope_jax.config.build import decoder_config
from hope_jax.config.defaults import config_from_dict


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"type": type(x).__name__,
                **{f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return repr(x)


def model_record(config: Any, vocab_size: int) -> dict:
    """The `DecoderConfig` that `config` (a ConfigDict, or its saved JSON dict) builds today, as
    JSON: dataclasses become dicts with their class name under "type"."""
    if not hasattr(config, "to_dict"):
        config = config_from_dict(config)
    return _jsonable(decoder_config(config, int(vocab_size)))


def record_differences(saved: Any, now: Any, path: str = "model") -> list[str]:
    """Every field both records hold with different values, as 'path: saved A, now B'. A field only
    one of them holds (added or removed by another hope_jax version) is not a difference: new
    fields are added with defaults that keep the old behaviour."""
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        out = []
        for k in sorted(set(saved) & set(now)):
            sub = f"{path}.{k}" if k != "type" else f"{path} (class)"
            out += record_differences(saved[k], now[k], sub)
        return out
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        return [d for i, (a, b) in enumerate(zip(saved, now))
                for d in record_differences(a, b, f"{path}[{i}]")]
    return [] if saved == now else [f"{path}: saved {saved!r}, now {now!r}"]


__all__ = ["model_record", "record_differences"]
