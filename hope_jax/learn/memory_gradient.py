"""The learner's backward through the sequence mixers' memory writes: "full" or "stop".

A learn step differentiates the next-token loss of a segment with respect to the learned levels
(the CMS). Between a learned level and the loss lie the blocks above it, whose sequence mixers
write their memories while reading the segment. "full" differentiates through those writes, as
training does (D8's meta-gradient); "stop" treats every mixer's write as a constant
(`M_t = M_{t−1} + stop_gradient(ΔM_t)`, D8's stop-gradient mode), so the backward runs through
the mixers' reads only. The forward, and so every score, is the same in both modes; only the
gradient of the learned levels changes (docs/continual.md, "The backward through the mixers").
"""
from __future__ import annotations

import dataclasses
from typing import Any

MEMORY_GRADIENTS = ("full", "stop")


def with_memory_gradient(config: Any, mode: str) -> Any:
    """`config` (a DecoderConfig, or any nest of config dataclasses and tuples) with every memory
    config that has a `gradient` field (self-modifying Titans, Titans / linear-recurrence memory
    mixers, inside composite mixers too) set to `mode`."""
    if mode not in MEMORY_GRADIENTS:
        raise ValueError(f"memory_gradient must be one of {MEMORY_GRADIENTS}, got {mode!r}")
    if isinstance(config, tuple):
        return tuple(with_memory_gradient(c, mode) for c in config)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return config
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "gradient" and isinstance(value, str):
            if value != mode:
                changes[f.name] = mode
            continue
        new = with_memory_gradient(value, mode)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(config, **changes) if changes else config


def has_memory_writes(config: Any) -> bool:
    """Whether any memory config in `config` has a `gradient` field (something "stop" changes)."""
    if isinstance(config, tuple):
        return any(has_memory_writes(c) for c in config)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return False
    return any((f.name == "gradient" and isinstance(getattr(config, f.name), str))
               or has_memory_writes(getattr(config, f.name)) for f in dataclasses.fields(config))


__all__ = ["MEMORY_GRADIENTS", "has_memory_writes", "with_memory_gradient"]
