"""Pallas TPU (Mosaic) kernel of `linear_chunk_update`, forward (backward:
`pallas_tpu_backward.py`).

Grid (B·H, d_v / block_dv, N chunks): the first two axes are "parallel", the chunk axis is
"arbitrary" (sequential), and the running state `W [block_dv, d_k]` stays in a VMEM scratch buffer
across the chunk loop: it is loaded from `w0` at chunk 0, never goes back to HBM between chunks,
and the final state is written at the last chunk. Each grid step also writes its chunk-start
state (the residual of the custom_vjp backward). The chunk's math is
`_chunk_math.linear_chunk_values` (WY/UT form, running reads in dual form).
"""
from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32, linear_chunk_values
from hope_jax.kernels._layout import gate_layouts, with_poison
from hope_jax.kernels.linear_chunk_update.backward import kernel_gates
from hope_jax.kernels.linear_chunk_update.block_sizes import LinearBlockSizes
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig

Array = jax.Array


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, w0_ref, *refs, config: LinearUpdateConfig,
            n_poison: int):
    refs = refs[n_poison:]  # poisoned buffers are only aliased to the outputs, never read
    y_ref, w_end_ref, starts_ref, w_scr = refs
    n = pl.program_id(2)

    @pl.when(n == 0)
    def _():
        w_scr[...] = w0_ref[...].astype(F32)

    w = w_scr[...]
    starts_ref[...] = w  # chunk-start state, for the backward

    def gate(j):  # (column [C, 1], row [1, C]) of gate channel j
        return gc_ref[:, j:j + 1], gr_ref[j:j + 1, :]

    y, w_new = linear_chunk_values(
        q_ref[...].astype(F32), k_ref[...].astype(F32), v_ref[...].astype(F32),
        gate(0), gate(1), gate(2) if config.dgd else None, w,
        affine=config.affine, read=config.read)
    y_ref[...] = y.astype(y_ref.dtype)
    w_scr[...] = w_new

    @pl.when(n == pl.num_programs(2) - 1)
    def _():
        w_end_ref[...] = w_new


# Kept as one function (issue 20): its length is the pallas_call's BlockSpec table, one line per
# operand next to its shape; split, the specs would sit away from the kernel's argument order.
def linear_forward_tpu(config: LinearUpdateConfig, block: LinearBlockSizes, q: Array, k: Array,
                       v: Array, eta: Array, alpha: Array, w0: Array, mask, *,
                       interpret: bool = False, poison: bool = False
                       ) -> tuple[Array, Array, Array]:
    """Forward on chunked inputs.

    Args:
      q, k: [BH, N, C, d_k]; v: [BH, N, C, d_v]; eta, alpha: [BH, N, C]; w0: [BH, d_v, d_k] f32;
      mask: [N, C] bool (real tokens).
      interpret: run in the Pallas interpreter (any backend).
      poison: pre-fill every output with NaN (aliased input buffers), to prove each element is
        written (tests).

    Returns:
      (y [BH, N, C, d_v] in q's dtype, W_end [BH, d_v, d_k] f32, chunk-start states
      [BH, N, d_v, d_k] f32).
    """
    bh, n, c, d_k = q.shape
    d_v = v.shape[-1]
    reason = block.tpu_reason(c, d_k, d_v)
    if reason is not None:
        raise ValueError(f"linear_chunk_update TPU kernel: {reason}")
    bdv = block.dv_block(d_v)
    gc, gr = gate_layouts(kernel_gates(config, k, eta, alpha, mask))
    g = gc.shape[-1]

    in_specs = [
        pl.BlockSpec((None, None, c, d_k), lambda b, j, i: (b, i, 0, 0)),  # q
        pl.BlockSpec((None, None, c, d_k), lambda b, j, i: (b, i, 0, 0)),  # k
        pl.BlockSpec((None, None, c, bdv), lambda b, j, i: (b, i, 0, j)),  # v
        pl.BlockSpec((None, None, c, g), lambda b, j, i: (b, i, 0, 0)),  # gate columns
        pl.BlockSpec((None, None, g, c), lambda b, j, i: (b, i, 0, 0)),  # gate rows
        pl.BlockSpec((None, bdv, d_k), lambda b, j, i: (b, j, 0)),  # w0
    ]
    out_specs = [
        pl.BlockSpec((None, None, c, bdv), lambda b, j, i: (b, i, 0, j)),  # y
        pl.BlockSpec((None, bdv, d_k), lambda b, j, i: (b, j, 0)),  # W_end (resident over i)
        pl.BlockSpec((None, None, bdv, d_k), lambda b, j, i: (b, i, j, 0)),  # chunk starts
    ]
    out_shape = [
        jax.ShapeDtypeStruct((bh, n, c, d_v), q.dtype),
        jax.ShapeDtypeStruct((bh, d_v, d_k), F32),
        jax.ShapeDtypeStruct((bh, n, d_v, d_k), F32),
    ]
    args = [q, k, v, gc, gr, w0.astype(F32)]
    args, in_specs, aliases, n_poison = with_poison(poison, args, in_specs, out_specs, out_shape)
    kernel = functools.partial(_kernel, config=config, n_poison=n_poison)
    y, w_end, starts = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(bh, d_v // bdv, n),
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((bdv, d_k), F32)],
        input_output_aliases=aliases,
        compiler_params=_compat.tpu_compiler_params(("parallel", "parallel", "arbitrary"),
                                                    block.vmem_limit_bytes),
        interpret=interpret,
        name="linear_chunk_update_fwd",
    )(*args)
    return y, w_end, starts
