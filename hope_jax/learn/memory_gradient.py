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
        new = tuple(with_memory_gradient(c, mode) for c in config)
        return config if all(a is b for a, b in zip(new, config)) else new
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


__all__ = ["MEMORY_GRADIENTS", "with_memory_gradient"]
