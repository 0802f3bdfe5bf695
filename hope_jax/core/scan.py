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

import jax
import jax.numpy as jnp

from hope_jax.core.closed_form import closed_form_chunk, prepare_chunk
from hope_jax.core.generic_chunk import generic_chunk
from hope_jax.core.inner_optimizers import MomentumState
from hope_jax.core.level import Level, LevelState
from hope_jax.core.linear_chunk import linear_chunk, prepare_linear_chunk
from hope_jax.core.validation import check_level_inputs

Array = jax.Array


def _vmap_batch_heads(fn, n_args: int, shared: tuple[int, ...] = ()):
    """vmaps a per-head function over [B, H] leading axes; args at `shared` are not mapped."""
    axes = tuple(None if i in shared else 0 for i in range(n_args))
    return jax.vmap(jax.vmap(fn, in_axes=axes), in_axes=axes)


def _chunk_step(level: Level, dynamic: bool):
    """(prepare, step) for the level's path.

    prepare(q, k, v, eta, alpha, beta, mask) → the state-independent part of one chunk, for one
    head of one sequence (run for all chunks in parallel before the scan, or inside the scan step
    on the linear path with remat);
    step(run, opt_state, snap, q, k, v, eta, alpha, beta, mask, prep) → (y, run, opt_state).
    """
    spec = level.spec
    stop = level.gradient == "stop"
    path = level.path
    if path == "generic":
        def step(run, opt_state, snap, q, k, v, eta, alpha, beta, mask, prep):
            return generic_chunk(level.memory, level.objective, level.optimizer, level.read, stop,
                                 run, opt_state, snap, q, k, v, eta, alpha, beta, mask)
        return None, step

    slot = spec.momentum_slot

    def get_momentum(opt_state):
        return None if slot is None else opt_state[slot].momentum

    def set_momentum(opt_state, momentum):
        if slot is None:
            return opt_state
        return opt_state[:slot] + (MomentumState(momentum),) + opt_state[slot + 1:]

    if path == "linear":
        def prepare(q, k, v, eta, alpha, beta, mask):
            return prepare_linear_chunk(spec, level.objective.affine, level.memory.residual,
                                        level.read, stop, dynamic, q, k, v, eta, alpha, beta, mask)

        def step(run, opt_state, snap, q, k, v, eta, alpha, beta, mask, prep):
            momentum = get_momentum(opt_state)
            y, w, s = linear_chunk(prep, stop, q, run[0], None if momentum is None else momentum[0],
                                   snap[0] if dynamic else None)
            return y, (w,), set_momentum(opt_state, None if s is None else (s,))
        return prepare, step

    def prepare(q, k, v, eta, alpha, beta, mask):
        return prepare_chunk(spec, stop, q, k, eta, alpha, beta, mask)

    def step(run, opt_state, snap, q, k, v, eta, alpha, beta, mask, prep):
        anchor = None if spec.anchor_slot is None else opt_state[spec.anchor_slot].anchor
        y, new_run, momentum = closed_form_chunk(level.memory, level.objective, spec, level.read,
                                                 stop, run, get_momentum(opt_state), snap, q, k,
                                                 v, prep, anchor)
        if stop:  # the optimizer state is written like the memory: a constant (D8)
            opt_state = jax.lax.stop_gradient(opt_state)
        return y, new_run, set_momentum(opt_state, momentum)
    return prepare, step


def _to_chunks(x: Array, n: int, c: int) -> Array:
    """[B, H, n·c, ...] → [n, B, H, c, ...]."""
    b, h = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, h, n, c, *x.shape[3:]), 2, 0)


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
    out_dtype = q.dtype
    b, t, h, _ = k.shape
    c = level.chunk_size

    def prep(x):  # [B, T, H, ...] → [B, H, T, ...] in the state's dtype
        return None if x is None else jnp.moveaxis(x.astype(dtype), 2, 1)

    q, k, v, eta, alpha, beta = map(prep, (q, k, v, eta, alpha, beta))
    dynamic = state.position is not None
    # A decode step (one token, carried state) runs a chunk of length 1 against the carried
    # snapshot: the same chunk math (gradient at M_ξ(t), D2; running write), O(1) in C and in T.
    single = dynamic and t == 1
    c_buf = 1 if single else c  # the length of one scanned chunk of the buffer
    if single:
        n, total, offset, mask = 1, 1, 0, None
    elif not dynamic:
        n = math.ceil(t / c)
        total = n * c
        offset = 0
        pad = [(0, 0), (0, 0), (0, total - t)]
        q, k, v, eta, alpha, beta = (None if x is None
                                     else jnp.pad(x, pad + [(0, 0)] * (x.ndim - 3))
                                     for x in (q, k, v, eta, alpha, beta))
        mask = None if total == t else (jnp.arange(total) < t).reshape(n, c)
    else:
        n = math.ceil((t + c - 1) / c)
        total = n * c
        offset = (state.position % c).astype(jnp.int32)

        def place(x):
            if x is None:
                return None
            buf = jnp.zeros(x.shape[:2] + (total,) + x.shape[3:], x.dtype)
            zero = jnp.zeros((), jnp.int32)
            start = (zero, zero, offset) + (zero,) * (x.ndim - 3)
            return jax.lax.dynamic_update_slice(buf, x, start)

        q, k, v, eta, alpha, beta = map(place, (q, k, v, eta, alpha, beta))
        pos = jnp.arange(total)
        mask = ((pos >= offset) & (pos < offset + t)).reshape(n, c)
    track_last_snapshot = mask is not None

    xs = tuple(None if x is None else _to_chunks(x, n, c_buf) for x in (q, k, v, eta, alpha, beta))
    prepare, step = _chunk_step(level, dynamic)
    # The state-independent work of a chunk runs before the scan for every chunk in parallel,
    # except on the linear path with remat, where it runs inside the checkpointed step (and again
    # in its backward): its [C, C] and [C, d] intermediates then stay chunk-sized instead of being
    # stored for the whole sequence (docs/core.md, "Linear path speed").
    prep_in_step = prepare is not None and level.path == "linear" and level.remat
    preps = None
    if prepare is not None:
        per_chunk = _vmap_batch_heads(prepare, 7, shared=(6,))
        if not prep_in_step:
            preps = jax.vmap(per_chunk)(*xs, mask)
    per_batch = _vmap_batch_heads(step, 11, shared=(9,))

    def body(carry, inputs):
        run, opt_state, snap, last_snap = carry
        (qc, kc, vc, ec, ac, bc), mc, prep = inputs
        if prep_in_step:
            prep = per_chunk(qc, kc, vc, ec, ac, bc, mc)
        snap_used = run if snap is None else snap
        y, new_run, new_opt = per_batch(run, opt_state, snap_used, qc, kc, vc, ec, ac, bc, mc, prep)
        new_snap = None if snap is None else new_run
        if last_snap is not None:  # the snapshot of the last chunk holding a real token
            last_snap = jax.tree.map(lambda a, b_: jnp.where(jnp.any(mc), a, b_), snap_used,
                                     last_snap)
        return (new_run, new_opt, new_snap, last_snap), y

    if level.remat:
        body = jax.checkpoint(body, prevent_cse=False)
    memory = tuple(w.astype(dtype) for w in state.memory)
    snap0 = tuple(w.astype(dtype) for w in state.snapshot) if dynamic else None
    last0 = memory if track_last_snapshot else None
    carry = (memory, state.opt_state, snap0, last0)
    (run, opt_state, _, last_snap), ys = jax.lax.scan(body, carry, (xs, mask, preps))

    y = jnp.moveaxis(ys, 0, 2).reshape(b, h, total, -1)  # [B, H, N·C, d_v] (N·C = 1 when single)
    y = jax.lax.dynamic_slice_in_dim(y, offset, t, axis=2) if dynamic else y[:, :, :t]
    y = jnp.moveaxis(y, 1, 2).astype(out_dtype)

    position = jnp.asarray(t, jnp.int32) + (state.position if dynamic else 0)
    if single:  # the snapshot moves only when this token ends a chunk (D2)
        aligned = position % c == 0
        snapshot = jax.tree.map(lambda r, s: jnp.where(aligned, r, s.astype(r.dtype)), run,
                                state.snapshot)
    elif not track_last_snapshot:
        snapshot = run
    else:
        aligned = position % c == 0
        snapshot = jax.tree.map(lambda r, s: jnp.where(aligned, r, s), run, last_snap)
    return y, LevelState(memory=run, opt_state=opt_state, snapshot=snapshot,
                         position=position.astype(jnp.int32))
