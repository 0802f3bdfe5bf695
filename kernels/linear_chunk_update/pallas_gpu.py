"""Pallas GPU (Triton) kernel of `linear_chunk_update`, forward (backward:
`pallas_gpu_backward.py`).

Triton runs the program instances of a grid concurrently, so a grid axis cannot carry state. The
grid is (B·H, d_v / block_dv), and each program walks its chunks in a `fori_loop` whose carry is the
running state `W [block_dv, d_k]` (registers / shared memory, never written to HBM between
chunks). Each chunk's start state is stored for the custom_vjp backward. The chunk's math is
`_chunk_math.linear_chunk_values`, shared with the TPU kernel.

Triton limits: every array has power-of-two sizes and `tl.dot` needs dimensions ≥ 16, so C, d_k
and block_dv must be powers of two ≥ 16 (`LinearBlockSizes.gpu_reason`); gate channels are padded
to 4.
"""
from __future__ import annotations

import functools

import jax
from jax import lax
from jax.experimental import pallas as pl

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32, linear_chunk_values
from hope_jax.kernels._layout import gate_layouts, with_poison
from hope_jax.kernels.linear_chunk_update.backward import kernel_gates
from hope_jax.kernels.linear_chunk_update.block_sizes import LinearBlockSizes
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig

Array = jax.Array
GATE_CHANNELS = 4  # [log α, η_e, p] padded to a power of two


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, w0_ref, *refs, config: LinearUpdateConfig,
            n_chunks: int, n_poison: int):
    refs = refs[n_poison:]
    y_ref, w_end_ref, starts_ref = refs

    def chunk(n, w):
        def gate(j):
            return gc_ref[n, :, j:j + 1], gr_ref[n, j:j + 1, :]

        starts_ref[n] = w
        y, w_new = linear_chunk_values(
            q_ref[n].astype(F32), k_ref[n].astype(F32), v_ref[n].astype(F32),
            gate(0), gate(1), gate(2) if config.dgd else None, w,
            affine=config.affine, read=config.read)
        y_ref[n] = y.astype(y_ref.dtype)
        return w_new

    w_end_ref[...] = lax.fori_loop(0, n_chunks, chunk, w0_ref[...].astype(F32))


def linear_forward_gpu(config: LinearUpdateConfig, block: LinearBlockSizes, q: Array, k: Array,
                       v: Array, eta: Array, alpha: Array, w0: Array, mask, *,
                       interpret: bool = False, poison: bool = False
                       ) -> tuple[Array, Array, Array]:
    """Forward on chunked inputs; arguments and results as `pallas_tpu.linear_forward_tpu`."""
    bh, n, c, d_k = q.shape
    d_v = v.shape[-1]
    reason = block.gpu_reason(c, d_k, d_v)
    if reason is not None:
        raise ValueError(f"linear_chunk_update GPU kernel: {reason}")
    bdv = block.dv_block(d_v)
    gc, gr = gate_layouts(kernel_gates(config, k, eta, alpha, mask), pad_to=GATE_CHANNELS)
    g = gc.shape[-1]

    in_specs = [
        pl.BlockSpec((None, n, c, d_k), lambda b, j: (b, 0, 0, 0)),  # q
        pl.BlockSpec((None, n, c, d_k), lambda b, j: (b, 0, 0, 0)),  # k
        pl.BlockSpec((None, n, c, bdv), lambda b, j: (b, 0, 0, j)),  # v
        pl.BlockSpec((None, n, c, g), lambda b, j: (b, 0, 0, 0)),  # gate columns
        pl.BlockSpec((None, n, g, c), lambda b, j: (b, 0, 0, 0)),  # gate rows
        pl.BlockSpec((None, bdv, d_k), lambda b, j: (b, j, 0)),  # w0
    ]
    out_specs = [
        pl.BlockSpec((None, n, c, bdv), lambda b, j: (b, 0, 0, j)),  # y
        pl.BlockSpec((None, bdv, d_k), lambda b, j: (b, j, 0)),  # W_end
        pl.BlockSpec((None, n, bdv, d_k), lambda b, j: (b, 0, j, 0)),  # chunk starts
    ]
    out_shape = [
        jax.ShapeDtypeStruct((bh, n, c, d_v), q.dtype),
        jax.ShapeDtypeStruct((bh, d_v, d_k), F32),
        jax.ShapeDtypeStruct((bh, n, d_v, d_k), F32),
    ]
    args = [q, k, v, gc, gr, w0.astype(F32)]
    args, in_specs, aliases, n_poison = with_poison(poison, args, in_specs, out_specs, out_shape)
    kernel = functools.partial(_kernel, config=config, n_chunks=n, n_poison=n_poison)
    y, w_end, starts = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(bh, d_v // bdv),
        in_specs=in_specs,
        out_specs=out_specs,
        input_output_aliases=aliases,
        compiler_params=_compat.triton_compiler_params(block.num_warps, block.num_stages),
        interpret=interpret,
        name="linear_chunk_update_fwd",
    )(*args)
    return y, w_end, starts
