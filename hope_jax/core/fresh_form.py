"""Memory states in fresh form: the state at a point where a sequence may be cut.

A level's state whose `position` is None is in *fresh form*: the scans read it as the start of a
sequence (chunk-aligned, no mid-chunk bookkeeping) from whatever memories it holds. A state a
scan returns after a whole number of the level's chunks is exactly such a state once its position
is dropped, so a long sequence can be read in pieces, each piece a fresh-form call from the state
the previous one left (`hope_jax.sharding.sequence_scan`, `Decoder`'s remat "full"). Attention
caches and streaming states keep their positions.

At such a point part of each state is redundant (D2: the snapshot taken at a chunk start is the
running memory; a chunk's write spends its gradient sum):

    SelfModifyingState.snapshots = memories,   LevelState.snapshot = memory,
    InContextState.grad_sum = 0.

`compact` drops those parts from fresh-form states and `expand` restores them, so whatever
stores states at the cuts (a backward pass's checkpoints, a device-to-device transfer) holds a
third (self-modifying memories) to a half (in-context CMS level) less.
"""
from __future__ import annotations

from typing import Any

import jax

from hope_jax.core.cms import InContextState
from hope_jax.core.level import LevelState
from hope_jax.core.self_modifying import SelfModifyingState


def _is_positioned(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields") and "position" in x._fields


def _map_states(fn, tree: Any, *others: Any) -> Any:
    """`fn(state, *counterparts)` on every positioned state of `tree` (outermost first, then the
    states inside it), the rest of the tree rebuilt as is."""
    def walk(x, *o):
        if _is_positioned(x):
            x = fn(x, *o)
            return type(x)(*(a if f == "position" else walk(a, *(getattr(y, f) for y in o))
                             for f, a in zip(x._fields, x)))
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(walk(*args) for args in zip(x, *o)))
        if isinstance(x, (tuple, list)):
            return type(x)(walk(*args) for args in zip(x, *o))
        if isinstance(x, dict):
            return {k: walk(v, *(y[k] for y in o)) for k, v in x.items()}
        return x
    return walk(tree, *others)


def positions(tree: Any) -> list:
    """The position of every positioned state in the tree (None: fresh form)."""
    found = []
    _map_states(lambda s: found.append(s.position) or s, tree)
    return found


def set_positions(tree: Any, value: Any) -> Any:
    """Every positioned state with `position = value` (None: the fresh form)."""
    return _map_states(lambda s: s._replace(position=value), tree)


def fresh_form_like(state: Any, template: Any) -> Any:
    """`state` with position None wherever `template` (the same tree, e.g. the state the sequence
    started from) has it; the other states keep their positions."""
    return _map_states(lambda s, t: s if t.position is not None else s._replace(position=None),
                       state, template)


def _compact_one(s: Any) -> Any:
    if s.position is not None:
        return s
    if isinstance(s, SelfModifyingState):
        return s._replace(snapshots=None)
    if isinstance(s, LevelState):
        return s._replace(snapshot=None)
    if isinstance(s, InContextState):
        return s._replace(grad_sum=None)
    return s


def _expand_one(s: Any) -> Any:
    if s.position is not None:
        return s
    if isinstance(s, SelfModifyingState) and s.snapshots is None:
        return s._replace(snapshots=dict(s.memories))
    if isinstance(s, LevelState) and s.snapshot is None:
        return s._replace(snapshot=s.memory)
    if isinstance(s, InContextState) and s.grad_sum is None:
        return s._replace(grad_sum=jax.tree.map(jax.numpy.zeros_like, s.theta))
    return s


def compact(tree: Any) -> Any:
    """Fresh-form states without their redundant parts (module docstring)."""
    return _map_states(_compact_one, tree)


def expand(tree: Any) -> Any:
    """The inverse of `compact`."""
    return _map_states(_expand_one, tree)


__all__ = ["compact", "expand", "fresh_form_like", "positions", "set_positions"]
