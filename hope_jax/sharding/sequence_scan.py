"""A recurrent scan split over the `sequence` mesh axis, its state passed from shard to shard.

A memory level's scan is a recurrence along the sequence: the state after token t depends on
every token before it. When the mesh has a `sequence` axis of n devices and the length T is split
over it, device j holds the segment [j·T/n, (j+1)·T/n) of every sequence. `sequence_scan` runs
the level so that each device keeps only its own segment's activations:

    round r = 0 … n−1:  device r runs the scan over its segment from the state S_r it holds,
                        (y_r, S_{r+1}) = scan(S_r, x_r), and sends S_{r+1} to device r+1.

Device 0 starts from the caller's state; the final state is device n−1's. This is exact: the
same scan of the same segments from the same states, in the same order. It is also sequential:
the devices of the axis take turns, so the axis divides the memory of the activations by n but
not the time of the scan. (The linear memories could instead run every shard at once and fix
the states up afterwards, docs/kernels.md, "Sequence parallelism"; the MLP and self-modifying
memories have no such closed form.)

Each round is rematerialised in the backward pass, so a device stores one state per round, not
the scan's activations of every round.

The split needs every segment to start at a chunk boundary of the level (`align` divides T/n):
the state passed on is then in the form of a fresh sequence's (its `position` None, snapshots
equal to the running memories, D2), and each device runs the level's fresh-sequence path. Where
that does not hold (or without a `sequence` axis, or for a streaming state), the plain scan runs
and GSPMD gathers the segments onto every device of the axis, as before.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hope_jax.core.fresh_form import compact, expand, positions, set_positions

SEQUENCE_AXIS = "sequence"


def sequence_shards(length: int, align: int) -> int:
    """The number of devices of the `sequence` axis that `sequence_scan` splits `length` tokens
    over in the mesh of the current context; 1 when it runs the plain scan."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or SEQUENCE_AXIS not in mesh.axis_names:
        return 1
    if any(t != jax.sharding.AxisType.Auto for t in mesh.axis_types):
        return 1
    n = mesh.shape[SEQUENCE_AXIS]
    if n == 1 or length % n or (length // n) % align:
        return 1
    return n


def sequence_scan(scan: Callable[[Any, Any, Any], tuple[Any, Any]], consts: Any, state: Any,
                  xs: Any, *, align: int) -> tuple[Any, Any]:
    """`scan(consts, state, xs) → (ys, state)` with the length split over the `sequence` axis.

    Args:
      scan: the level over a sequence; xs and ys are pytrees of [B, T, ...] arrays (length on
        axis 1). Its positioned states (NamedTuples with a `position` field) hold None for a
        fresh sequence, else the tokens already read.
      consts: the arrays `scan` reads besides the state (the level's parameters); every device
        gets all of them. `scan` must not close over traced arrays.
      state: the state before the sequence: in fresh form (every position None), or a streaming
        state (every position an array).
      align: in fresh form, every segment T/n must be a multiple of this (the lcm of the level's
        chunks and periods), so that each device can start a fresh-form scan. A streaming state
        starts anywhere.

    Returns:
      (ys, final state): the values of `scan(consts, state, xs)`.
    """
    length = jax.tree.leaves(xs)[0].shape[1]
    found = positions(state)
    fresh = all(p is None for p in found)
    streaming = bool(found) and all(p is not None for p in found)
    n = sequence_shards(length, align if fresh else 1) if fresh or streaming else 1
    if n == 1:
        return scan(consts, state, xs)

    ys_shape = jax.eval_shape(lambda c, s, x: scan(c, s, x)[0], consts, state, xs)

    def local(consts, state, xs):
        me = jax.lax.axis_index(SEQUENCE_AXIS)
        ys0 = jax.tree.map(lambda a: jnp.zeros(a.shape[:1] + (a.shape[1] // n,) + a.shape[2:],
                                               a.dtype), ys_shape)  # one segment's outputs

        def run(s):  # states travel compact (core/fresh_form.py)
            ys, s = scan(consts, expand(s), xs)
            return ys, compact(set_positions(s, None) if fresh else s)

        def one_round(carry, r):  # device r reads its segment and hands its state to r + 1
            s, ys = carry
            ys, s = jax.lax.cond(me == r, run, lambda s: (ys, s), s)
            received = jax.lax.ppermute(s, SEQUENCE_AXIS, [(i, i + 1) for i in range(n - 1)])
            s = jax.tree.map(lambda a, b: jnp.where(me == r + 1, a, b), received, s)
            return (s, ys), None

        (s, ys), _ = jax.lax.scan(jax.checkpoint(one_round), (compact(state), ys0),
                                  jnp.arange(n))
        return ys, jax.tree.map(lambda a: a[None], expand(s))  # every device's end state

    everywhere = lambda tree: jax.tree.map(lambda _: P(), tree)
    along = lambda tree: jax.tree.map(lambda _: P(None, SEQUENCE_AXIS), tree)
    ys, ends = jax.shard_map(
        local, in_specs=(everywhere(consts), everywhere(state), along(xs)),
        out_specs=(along(ys_shape), jax.tree.map(lambda _: P(SEQUENCE_AXIS), state)),
        axis_names=frozenset({SEQUENCE_AXIS}), check_vma=False)(consts, state, xs)
    final = jax.tree.map(lambda a: a[-1], ends)  # device n−1's: the state after the sequence
    return ys, set_positions(final, jnp.asarray(length, jnp.int32)) if fresh else final


__all__ = ["SEQUENCE_AXIS", "sequence_scan", "sequence_shards"]
