"""The write ablation: switch off every in-context write of a model, keeping its parameters.

A module that writes in context (the self-modifying mixer, a memory mixer, an in-context CMS
level) carries a static flag `memory_writes`. With the flag off its memories stay at their
meta-learned initial state for the whole sequence (η ≡ 0 and α ≡ 1, so every write is the
identity) while everything else, reads included, is unchanged. Comparing a model with writes on
and off measures what the in-context learning contributes (`hope_jax.eval.memory_probe`).

The flag is part of the module graph's static data, so jitted functions recompile once per value.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flax import nnx


def writing_modules(model: nnx.Module) -> list[nnx.Module]:
    """Every sub-module of `model` that writes in context (it has a `memory_writes` flag)."""
    return [m for _, m in nnx.iter_graph(model)
            if isinstance(m, nnx.Module) and hasattr(m, "memory_writes")]


def set_memory_writes(model: nnx.Module, enabled: bool) -> int:
    """Turns every in-context write of `model` on or off; returns how many modules it set."""
    modules = writing_modules(model)
    for m in modules:
        m.memory_writes = bool(enabled)
    return len(modules)


@contextlib.contextmanager
def memory_writes(model: nnx.Module, enabled: bool) -> Iterator[int]:
    """`with memory_writes(model, False): ...` runs the block with the writes off, then restores
    each module's previous setting. Yields the number of writing modules."""
    modules = writing_modules(model)
    before = [m.memory_writes for m in modules]
    try:
        for m in modules:
            m.memory_writes = bool(enabled)
        yield len(modules)
    finally:
        for m, b in zip(modules, before):
            m.memory_writes = b
