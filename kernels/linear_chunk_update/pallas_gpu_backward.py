"""Pallas GPU (Triton) backward kernel of `linear_chunk_update`.

As the forward, a grid axis cannot carry state on Triton: the grid is (B·H, d_v / block_dv) and
each program walks its chunks in REVERSE in a `fori_loop` (chunk N−1−i at step i) whose carry is
the state cotangent dW [block_dv, d_k] (initialised from the cotangent of W_end; dW_0 is written
after the loop). Per chunk, the same math as the TPU backward (`pallas_tpu_backward.chunk_vjp`):
recompute from the saved chunk-start state and `jax.vjp` of `_chunk_math.linear_chunk_values`
traced in the kernel body. Outputs and their per-value-block partial sums as the TPU kernel; gate
channels padded to 4 (Triton's power-of-two sizes); C, d_k and block_dv powers of two ≥ 16.
"""
from __future__ import annotations

import functools

import jax
from jax import lax
from jax.experimental import pallas as pl

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32
from hope_jax.kernels._layout import load_gates, store_gates, with_poison
from hope_jax.kernels.linear_chunk_update.block_sizes import LinearBlockSizes
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig
from hope_jax.kernels.linear_chunk_update.pallas_tpu_backward import chunk_vjp, n_gate_channels

Array = jax.Array


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, start_ref, dy_ref, dw_end_ref, *refs,
            config: LinearUpdateConfig, n_chunks: int, n_poison: int):
    refs = refs[n_poison:]
    dq_ref, dk_ref, dv_ref, dgc_ref, dgr_ref, dw0_ref = refs

    def chunk(i, dw):
        n = n_chunks - 1 - i
        cols, rows = load_gates(gc_ref, gr_ref, range(n_gate_channels(config)), n)
        dq, dk, dv, dgc, dgr, dw_start = chunk_vjp(
            config, q_ref[n].astype(F32), k_ref[n].astype(F32), v_ref[n].astype(F32),
            cols, rows, start_ref[n], dy_ref[n].astype(F32), dw)
        dq_ref[n] = dq
        dk_ref[n] = dk
        dv_ref[n] = dv
        store_gates(dgc_ref, dgr_ref, dgc, dgr, n)
        return dw_start

    dw0_ref[...] = lax.fori_loop(0, n_chunks, chunk, dw_end_ref[...].astype(F32))


def linear_backward_gpu(config: LinearUpdateConfig, block: LinearBlockSizes, q: Array, k: Array,
                        v: Array, gc: Array, gr: Array, starts: Array, dy: Array, dw_end: Array,
                        *, interpret: bool = False, poison: bool = False
                        ) -> tuple[Array, ...]:
    """Backward on chunked inputs; arguments and results as
    `pallas_tpu_backward.linear_backward_tpu` (gate layouts with 4 channels)."""
    bh, n, c, d_k = q.shape
    d_v = v.shape[-1]
    reason = block.gpu_reason(c, d_k, d_v)
    if reason is not None:
        raise ValueError(f"linear_chunk_update GPU backward kernel: {reason}")
    bdv = block.dv_block(d_v)
    nj = d_v // bdv
    g = gc.shape[-1]

    def seq(last_dim, by_j=False):
        if by_j:
            return pl.BlockSpec((None, n, c, last_dim), lambda b, j: (b, 0, 0, j))
        return pl.BlockSpec((None, n, c, last_dim), lambda b, j: (b, 0, 0, 0))

    def partial(shape):
        return pl.BlockSpec((None, None, n) + shape, lambda b, j: (b, j, 0, 0, 0))

    state_spec = pl.BlockSpec((None, bdv, d_k), lambda b, j: (b, j, 0))
    in_specs = [
        seq(d_k), seq(d_k), seq(bdv, by_j=True),  # q, k, v
        seq(g),  # gate columns
        pl.BlockSpec((None, n, g, c), lambda b, j: (b, 0, 0, 0)),  # gate rows
        pl.BlockSpec((None, n, bdv, d_k), lambda b, j: (b, 0, j, 0)),  # chunk starts
        seq(bdv, by_j=True),  # dy
        state_spec,  # dW_end
    ]
    out_specs = [partial((c, d_k)), partial((c, d_k)), seq(bdv, by_j=True),
                 partial((c, g)), partial((g, c)), state_spec]
    out_shape = [
        jax.ShapeDtypeStruct((bh, nj, n, c, d_k), F32),
        jax.ShapeDtypeStruct((bh, nj, n, c, d_k), F32),
        jax.ShapeDtypeStruct((bh, n, c, d_v), F32),
        jax.ShapeDtypeStruct((bh, nj, n, c, g), F32),
        jax.ShapeDtypeStruct((bh, nj, n, g, c), F32),
        jax.ShapeDtypeStruct((bh, d_v, d_k), F32),
    ]
    args = [q, k, v, gc, gr, starts, dy, dw_end.astype(F32)]
    args, in_specs, aliases, n_poison = with_poison(poison, args, in_specs, out_specs, out_shape)
    kernel = functools.partial(_kernel, config=config, n_chunks=n, n_poison=n_poison)
    return tuple(pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(bh, nj),
        in_specs=in_specs,
        out_specs=out_specs,
        input_output_aliases=aliases,
        compiler_params=_compat.triton_compiler_params(block.num_warps, block.num_stages),
        interpret=interpret,
        name="linear_chunk_update_bwd",
    )(*args))
