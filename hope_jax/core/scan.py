"""The chunked scan: a level run over a whole sequence, chunk by chunk (design §1.5, §3.4, §6.4).

`chunked_scan` splits [B, T, H, ·] inputs into chunks of C tokens, runs one chunk at a time with
`lax.scan` (each chunk rematerialised with `jax.checkpoint` in the backward pass, D30), and
vmaps the per-chunk work over batch and heads. Inside a chunk every gradient is taken at the
chunk-start snapshot (D2) and the writes form a running state that the outputs read (post-write
`M_t`, pre-write `M_{t−1}`, or the snapshot). A sequence not divisible by C is right-padded and the
padded tokens do not write (D35). A state can be passed in and is returned, so a sequence can be
processed in several calls (streaming), split anywhere: the state carries the current chunk's
snapshot and the position.
"""
from __future__ import annotations

import math
from typing import NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hope_jax.core.closed_form import closed_form_chunk, prepare_chunk
from hope_jax.core.grouped_scan import grouped_scan
from hope_jax.core.generic_chunk import generic_chunk
from hope_jax.core.inner_optimizers import MomentumState
from hope_jax.core.level import Level, LevelState
from hope_jax.core.linear_chunk import linear_chunk, prepare_linear_chunk
from hope_jax.core.validation import check_level_inputs

Array = jax.Array


class ChunkInputs(NamedTuple):
    """One chunk's inputs for one head of one sequence (the scan maps them over [B, H]).

    q, k: [C, d_k]; v: [C, d_v]; eta, alpha, beta: [C] gates (alpha / beta None when the
    optimizer has no retention / momentum); mask: [C] tokens that write, shared by every batch
    row and head (None when all do).
    """

    q: Array
    k: Array
    v: Array
    eta: Array
    alpha: Array | None
    beta: Array | None
    mask: Array | None


class MemoryCarry(NamedTuple):
    """The state one chunk reads and writes: running memory, optimizer state and the snapshot its
    gradients are taken at (D2)."""

    run: tuple
    opt_state: tuple
    snap: tuple


# vmap axes of a per-head function over [B, H]: everything is mapped except the shared mask.
_INPUT_AXES = ChunkInputs(0, 0, 0, 0, 0, 0, None)


def _vmap_batch_heads(fn: Callable, *in_axes) -> Callable:
    """vmaps a per-head function over the [B, H] leading axes of its arguments."""
    return jax.vmap(jax.vmap(fn, in_axes=in_axes), in_axes=in_axes)


def _chunk_step(level: Level, dynamic: bool) -> tuple[Callable | None, Callable]:
    """(prepare, step) for the level's path, per head of one sequence.

    prepare(x: ChunkInputs) → the state-independent part of one chunk (run for all chunks in
    parallel before the scan, or inside the scan step on the linear path with remat), or None;
    step(carry: MemoryCarry, x: ChunkInputs, prep) → (y, new run, new opt_state).
    """
    spec = level.spec
    stop = level.gradient == "stop"
    if level.path == "generic":
        def generic_step(carry: MemoryCarry, x: ChunkInputs, prep):
            return generic_chunk(level.memory, level.objective, level.optimizer, level.read, stop,
                                 carry.run, carry.opt_state, carry.snap, x.q, x.k, x.v, x.eta,
                                 x.alpha, x.beta, x.mask, spec=level.spec)
        return None, generic_step

    slot = spec.momentum_slot

    def get_momentum(opt_state):
        return None if slot is None else opt_state[slot].momentum

    def set_momentum(opt_state, momentum):
        if slot is None:
            return opt_state
        return opt_state[:slot] + (MomentumState(momentum),) + opt_state[slot + 1:]

    if level.path == "linear":
        def linear_prepare(x: ChunkInputs):
            return prepare_linear_chunk(spec, level.objective.affine, level.memory.residual,
                                        level.read, stop, dynamic, x.q, x.k, x.v, x.eta, x.alpha,
                                        x.beta, x.mask)

        def linear_step(carry: MemoryCarry, x: ChunkInputs, prep):
            momentum = get_momentum(carry.opt_state)
            y, w, s = linear_chunk(prep, stop, x.q, carry.run[0],
                                   None if momentum is None else momentum[0],
                                   carry.snap[0] if dynamic else None)
            return y, (w,), set_momentum(carry.opt_state, None if s is None else (s,))
        return linear_prepare, linear_step

    def closed_prepare(x: ChunkInputs):
        return prepare_chunk(spec, stop, x.q, x.k, x.eta, x.alpha, x.beta, x.mask)

    def closed_step(carry: MemoryCarry, x: ChunkInputs, prep):
        opt_state = carry.opt_state
        anchor = None if spec.anchor_slot is None else opt_state[spec.anchor_slot].anchor
        y, new_run, momentum = closed_form_chunk(level.memory, level.objective, spec, level.read,
                                                 stop, carry.run, get_momentum(opt_state),
                                                 carry.snap, x.q, x.k, x.v, prep, anchor)
        if stop:  # the optimizer state is written like the memory: a constant (D8)
            opt_state = jax.lax.stop_gradient(opt_state)
        return y, new_run, set_momentum(opt_state, momentum)
    return closed_prepare, closed_step


class _Layout(NamedTuple):
    """Where a call's T tokens sit in the scanned buffer of `n` chunks of `c_buf` tokens.

    offset: the first token's place (the carried position modulo C when streaming, else 0);
    mask: [n, c_buf] the buffer slots holding real tokens, or None when all do;
    single: a decode step (one token against a carried state: one chunk of length 1).
    """

    n: int
    c_buf: int
    total: int
    offset: Array | int
    mask: Array | None
    single: bool


def _layout(state: LevelState, t: int, c: int) -> _Layout:
    """The buffer layout of a call (right padding, D35; mid-chunk start when streaming)."""
    dynamic = state.position is not None
    if dynamic and t == 1:
        # A decode step runs a chunk of length 1 against the carried snapshot: the same chunk
        # math (gradient at M_ξ(t), D2; running write), O(1) in C and in T.
        return _Layout(1, 1, 1, 0, None, True)
    if not dynamic:
        n = math.ceil(t / c)
        mask = None if n * c == t else (jnp.arange(n * c) < t).reshape(n, c)
        return _Layout(n, c, n * c, 0, mask, False)
    n = math.ceil((t + c - 1) / c)
    offset = (state.position % c).astype(jnp.int32)
    pos = jnp.arange(n * c)
    return _Layout(n, c, n * c, offset, ((pos >= offset) & (pos < offset + t)).reshape(n, c),
                   False)


def _place(x: Array | None, layout: _Layout) -> Array | None:
    """[B, H, T, ...] → the layout's buffer [B, H, total, ...], zeros outside the tokens."""
    if x is None or layout.single:
        return x
    if isinstance(layout.offset, int):  # a fresh state: right padding only
        pad = [(0, 0), (0, 0), (0, layout.total - x.shape[2])] + [(0, 0)] * (x.ndim - 3)
        return jnp.pad(x, pad)
    buf = jnp.zeros(x.shape[:2] + (layout.total,) + x.shape[3:], x.dtype)
    zero = jnp.zeros((), jnp.int32)
    start = (zero, zero, layout.offset) + (zero,) * (x.ndim - 3)
    return jax.lax.dynamic_update_slice(buf, x, start)


def _scan_chunks(level: Level, dynamic: bool, carry0: MemoryCarry, xs: ChunkInputs,
                 track_last_snapshot: bool):
    """lax.scan of the level's chunk step over xs (leaves [n, B, H, C, ...]; mask [n, C]).

    Returns (final carry, the snapshot of the last chunk holding a real token, ys [n, B, H, C, ·]).
    """
    prepare, step = _chunk_step(level, dynamic)
    per_batch = _vmap_batch_heads(step, 0, _INPUT_AXES, 0)
    # The state-independent work of a chunk runs before the scan for every chunk in parallel,
    # except on the linear path with remat, where it runs inside the checkpointed step (and again
    # in its backward): its [C, C] and [C, d] intermediates then stay chunk-sized instead of being
    # stored for the whole sequence (docs/core.md, "Linear path speed").
    prep_in_step = prepare is not None and level.path == "linear" and level.remat
    per_chunk = None if prepare is None else _vmap_batch_heads(prepare, _INPUT_AXES)
    preps = None if prepare is None or prep_in_step else jax.vmap(per_chunk)(xs)
    fresh = carry0.snap is None  # a fresh state: each chunk's snapshot is its start state

    def body(carry, inputs):
        state, last_snap = carry
        x, prep = inputs
        if prep_in_step:
            prep = per_chunk(x)
        snap = state.run if fresh else state.snap
        y, run, opt_state = per_batch(state._replace(snap=snap), x, prep)
        if last_snap is not None:  # the snapshot of the last chunk holding a real token
            last_snap = jax.tree.map(lambda a, b: jnp.where(jnp.any(x.mask), a, b), snap, last_snap)
        return (MemoryCarry(run, opt_state, None if fresh else run), last_snap), y

    last0 = carry0.run if track_last_snapshot else None
    (final, last_snap), ys = grouped_scan(body, (carry0, last0), (xs, preps), remat=level.remat,
                                          group=level.scan_group)
    return final, last_snap, ys


def chunked_scan(level: Level, state: LevelState, q: Array, k: Array, v: Array, eta: Array,
                 alpha: Array | None = None, beta: Array | None = None
                 ) -> tuple[Array, LevelState]:
    """Runs a level over a sequence with chunk size `level.chunk_size`.

    Args:
      level: the level (memory, objective, inner optimizer, chunk size, read mode, ...).
      state: its state (`level.init_state(params, B)` for a fresh sequence).
      q, k: queries and keys [B, T, H, d_k]; v: values [B, T, H, d_v].
      eta: inner step sizes η_t [B, T, H]; alpha: retention α_t [B, T, H] (when the optimizer has
        retention); beta: momentum decay β_t [B, T, H] (when it has momentum).

    Returns:
      (y [B, T, H, d_v] in q's dtype, the new state). Inputs are computed in the state's dtype.
    """
    check_level_inputs(level, state, q, k, v, eta, alpha, beta)
    dtype = state.memory[0].dtype
    b, t, h, _ = k.shape
    c = level.chunk_size
    dynamic = state.position is not None
    layout = _layout(state, t, c)

    def chunks(x):  # [B, T, H, ...] → [n, B, H, c_buf, ...] in the state's dtype
        if x is None:
            return None
        x = _place(jnp.moveaxis(x.astype(dtype), 2, 1), layout)
        return jnp.moveaxis(x.reshape(b, h, layout.n, layout.c_buf, *x.shape[3:]), 2, 0)

    xs = ChunkInputs(*map(chunks, (q, k, v, eta, alpha, beta)), layout.mask)
    carry0 = MemoryCarry(tuple(w.astype(dtype) for w in state.memory), state.opt_state,
                         tuple(w.astype(dtype) for w in state.snapshot) if dynamic else None)
    track_last = layout.mask is not None
    final, last_snap, ys = _scan_chunks(level, dynamic, carry0, xs, track_last)

    y = jnp.moveaxis(ys, 0, 2).reshape(b, h, layout.total, -1)  # [B, H, N·C, d_v]
    y = jax.lax.dynamic_slice_in_dim(y, layout.offset, t, axis=2) if dynamic else y[:, :, :t]
    position = jnp.asarray(t, jnp.int32) + (state.position if dynamic else 0)
    return jnp.moveaxis(y, 1, 2).astype(q.dtype), LevelState(
        memory=final.run, opt_state=final.opt_state,
        snapshot=_next_snapshot(layout, position, c, final.run, last_snap, state.snapshot),
        position=position.astype(jnp.int32))


def _next_snapshot(layout: _Layout, position: Array, c: int, run: tuple, last_snap,
                   carried: tuple) -> tuple:
    """The snapshot the next call's current chunk uses: the final memory at a chunk boundary,
    else the snapshot of the last chunk this call touched (D2)."""
    aligned = position % c == 0
    if layout.single:  # the snapshot moves only when this token ends a chunk
        return jax.tree.map(lambda r, s: jnp.where(aligned, r, s.astype(r.dtype)), run, carried)
    if last_snap is None:
        return run
    return jax.tree.map(lambda r, s: jnp.where(aligned, r, s), run, last_snap)
