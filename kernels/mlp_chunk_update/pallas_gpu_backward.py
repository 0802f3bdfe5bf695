"""Pallas GPU (Triton) backward kernel of `mlp_chunk_update`.

Grid (B·H,): one program per head walks its chunks in REVERSE in a `fori_loop` (chunk N−1−i at
step i) whose carry is the state cotangent (dW_in, dW_out, dS_in, dS_out), initialised from the
cotangent of the end state; the initial state's cotangent is written after the loop. Per chunk the
same math as the TPU backward (`pallas_tpu_backward.chunk_vjp`). Gate channels padded to 8; C, d
and h powers of two ≥ 16. As for the forward, the whole state and its cotangent (8·h·d floats)
are the loop's working set: meant for small heads (no GPU here to measure spills).
"""
from __future__ import annotations

import functools

import jax
from jax import lax
from jax.experimental import pallas as pl

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32
from hope_jax.kernels._layout import load_gates, store_gates, with_poison
from hope_jax.kernels.mlp_chunk_update.block_sizes import MLPBlockSizes
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig
from hope_jax.kernels.mlp_chunk_update.pallas_tpu_backward import (MASK_CHANNEL, chunk_vjp,
                                                                   n_gate_channels)

Array = jax.Array


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, *refs, config: MLPUpdateConfig, n_chunks: int,
            n_poison: int):
    start_refs, dy_ref, dend_refs = refs[:4], refs[4], refs[5:9]
    refs = refs[9 + n_poison:]
    dq_ref, dk_ref, dv_ref, dgc_ref, dgr_ref = refs[:5]
    d0_refs = refs[5:9]

    def chunk(i, dstate):
        n = n_chunks - 1 - i
        cols, rows = load_gates(gc_ref, gr_ref, range(n_gate_channels(config)), n)
        mask = load_gates(gc_ref, gr_ref, [MASK_CHANNEL], n)
        dq, dk, dv, dgc, dgr, dstart = chunk_vjp(
            config, q_ref[n].astype(F32), k_ref[n].astype(F32), v_ref[n].astype(F32),
            cols, rows, (mask[0][0], mask[1][0]), tuple(r[n] for r in start_refs),
            dy_ref[n].astype(F32), dstate)
        dq_ref[n] = dq
        dk_ref[n] = dk
        dv_ref[n] = dv
        store_gates(dgc_ref, dgr_ref, dgc, dgr, n)
        return tuple(dstart)

    d0 = lax.fori_loop(0, n_chunks, chunk, tuple(r[...].astype(F32) for r in dend_refs))
    for dst, x in zip(d0_refs, d0):
        dst[...] = x


def mlp_backward_gpu(config: MLPUpdateConfig, block: MLPBlockSizes, q: Array, k: Array,
                     v: Array, gc: Array, gr: Array, starts: tuple, dy: Array, dend: tuple, *,
                     interpret: bool = False, poison: bool = False) -> tuple:
    """Backward on chunked inputs; arguments and results as
    `pallas_tpu_backward.mlp_backward_tpu` (gate layouts with 8 channels)."""
    bh, n, c, d = q.shape
    h = starts[0].shape[-2]
    reason = block.gpu_reason(c, d, h)
    if reason is not None:
        raise ValueError(f"mlp_chunk_update GPU backward kernel: {reason}")
    g = gc.shape[-1]
    shapes = [(h, d), (d, h), (h, d), (d, h)]

    def whole(*dims):
        return pl.BlockSpec((None,) + dims, lambda b: (b,) + (0,) * len(dims))

    in_specs = ([whole(n, c, d)] * 3 + [whole(n, c, g), whole(n, g, c)]
                + [whole(n, *s) for s in shapes] + [whole(n, c, d)] + [whole(*s) for s in shapes])
    out_specs = ([whole(n, c, d)] * 3 + [whole(n, c, g), whole(n, g, c)]
                 + [whole(*s) for s in shapes])
    out_shape = ([jax.ShapeDtypeStruct((bh, n, c, d), F32)] * 3
                 + [jax.ShapeDtypeStruct((bh, n, c, g), F32),
                    jax.ShapeDtypeStruct((bh, n, g, c), F32)]
                 + [jax.ShapeDtypeStruct((bh,) + s, F32) for s in shapes])
    args = [q, k, v, gc, gr, *starts, dy, *(x.astype(F32) for x in dend)]
    args, in_specs, aliases, n_poison = with_poison(poison, args, in_specs, out_specs, out_shape)
    kernel = functools.partial(_kernel, config=config, n_chunks=n, n_poison=n_poison)
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(bh,),
        in_specs=in_specs,
        out_specs=out_specs,
        input_output_aliases=aliases,
        compiler_params=_compat.triton_compiler_params(block.num_warps, block.num_stages),
        interpret=interpret,
        name="mlp_chunk_update_bwd",
    )(*args)
    return tuple(outs[:5]) + (tuple(outs[5:9]),)
