"""Pallas TPU (Mosaic) backward kernel of `linear_chunk_update`.

Grid (B·H, d_v / block_dv, N chunks); the chunk axis is "arbitrary" and walked in REVERSE (the
index maps read chunk N−1−i at step i). The cotangent of the running state, dW [block_dv, d_k]
float32, stays in a VMEM scratch buffer across the chunk loop: it is loaded from the cotangent of
W_end at the first step and written out as dW_0 at the last. Per chunk, on chip:

    (y, W_end) = linear_chunk_values(q, k, v, gates, W_start)        (recomputed from the saved
                                                                     chunk-start state)
    (dq, dk, dv, d gates, dW_start) = vjp(linear_chunk_values)(dy, dW_end)

with the chunk function traced inside the kernel body (`jax.vjp`) and the DGD system solved by
`_chunk_math.unit_lower_solve_diff` (forward substitution; its VJP is a back substitution and an
outer product, so everything left is dot_general, elementwise, exp, selects with iota masks,
reductions and broadcasts). Value-row blocks are independent, but q, k and the gates are shared by
all of them: their cotangents come out per block ([B·H, d_v / block_dv, N, …]) and are summed by
the caller (`backward.pallas_backward`), as are the gate cotangents' column and row layouts.
"""
from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32, linear_chunk_values
from hope_jax.kernels._layout import load_gates, store_gates, with_poison
from hope_jax.kernels.linear_chunk_update.block_sizes import LinearBlockSizes
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig

Array = jax.Array


def n_gate_channels(config: LinearUpdateConfig) -> int:
    """Gate channels the chunk math reads: [log α, η_e] and p with DGD."""
    return 3 if config.dgd else 2


def chunk_vjp(config: LinearUpdateConfig, q: Array, k: Array, v: Array, cols: list[Array],
              rows: list[Array], w: Array, dy: Array, dw: Array) -> tuple:
    """Cotangents of one chunk (shared by the TPU and GPU backward kernels).

    Recomputes `linear_chunk_values` from the chunk-start state and pulls (dy, dW_end) back with
    `jax.vjp` (traced in the kernel body; DGD solve by `unit_lower_solve_diff`).

    Args:
      q, k [C, d_k], v [C, bdv], cols / rows: gate channels [log α, η_e(, p)] as [C, 1] / [1, C],
      w [bdv, d_k] (the chunk-start state), dy [C, bdv], dw [bdv, d_k] (cotangent of the
      chunk-end state); float32.

    Returns:
      (dq, dk, dv, [d col_j], [d row_j], dW_start), float32.
    """

    def chunk(q_, k_, v_, w_, cols_, rows_):
        gates = list(zip(cols_, rows_))
        return linear_chunk_values(q_, k_, v_, gates[0], gates[1],
                                   gates[2] if config.dgd else None, w_, affine=config.affine,
                                   read=config.read, differentiable=True)

    _, pull = jax.vjp(chunk, q, k, v, w, cols, rows)
    dq, dk, dv, dw_start, dcols, drows = pull((dy, dw))
    return dq, dk, dv, list(dcols), list(drows), dw_start


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, start_ref, dy_ref, dw_end_ref, *refs,
            config: LinearUpdateConfig, n_poison: int):
    refs = refs[n_poison:]
    dq_ref, dk_ref, dv_ref, dgc_ref, dgr_ref, dw0_ref, dw_scr = refs
    i = pl.program_id(2)

    @pl.when(i == 0)
    def _():
        dw_scr[...] = dw_end_ref[...].astype(F32)

    cols, rows = load_gates(gc_ref, gr_ref, range(n_gate_channels(config)))
    dq, dk, dv, dgc, dgr, dw = chunk_vjp(
        config, q_ref[...].astype(F32), k_ref[...].astype(F32), v_ref[...].astype(F32),
        cols, rows, start_ref[...], dy_ref[...].astype(F32), dw_scr[...])
    dq_ref[...] = dq
    dk_ref[...] = dk
    dv_ref[...] = dv
    store_gates(dgc_ref, dgr_ref, dgc, dgr)
    dw_scr[...] = dw

    @pl.when(i == pl.num_programs(2) - 1)
    def _():
        dw0_ref[...] = dw


# Kept as one function (issue 20): its length is the pallas_call's BlockSpec table, one line per
# operand next to its shape; split, the specs would sit away from the kernel's argument order.
def linear_backward_tpu(config: LinearUpdateConfig, block: LinearBlockSizes, q: Array, k: Array,
                        v: Array, gc: Array, gr: Array, starts: Array, dy: Array, dw_end: Array,
                        *, interpret: bool = False, poison: bool = False
                        ) -> tuple[Array, ...]:
    """Backward on chunked inputs.

    Args:
      q, k [BH, N, C, d_k]; v [BH, N, C, d_v]; gc [BH, N, C, G], gr [BH, N, G, C] (the forward's
      gate layouts); starts [BH, N, d_v, d_k] f32 (chunk-start states); dy [BH, N, C, d_v];
      dw_end [BH, d_v, d_k] (cotangent of W_end).

    Returns, float32, with J = d_v / block_dv:
      (dq [BH, J, N, C, d_k], dk [BH, J, N, C, d_k], dv [BH, N, C, d_v], dgc [BH, J, N, C, G],
      dgr [BH, J, N, G, C], dW_0 [BH, d_v, d_k]).
    """
    bh, n, c, d_k = q.shape
    d_v = v.shape[-1]
    reason = block.tpu_reason(c, d_k, d_v)
    if reason is not None:
        raise ValueError(f"linear_chunk_update TPU backward kernel: {reason}")
    bdv = block.dv_block(d_v)
    nj = d_v // bdv
    g = gc.shape[-1]
    last = n - 1

    def seq(last_dim, by_j=False):  # a per-chunk block, chunks read in reverse
        if by_j:
            return pl.BlockSpec((None, None, c, last_dim), lambda b, j, i: (b, last - i, 0, j))
        return pl.BlockSpec((None, None, c, last_dim), lambda b, j, i: (b, last - i, 0, 0))

    def partial(shape):  # a per-chunk block of a per-value-block partial cotangent
        return pl.BlockSpec((None, None, None) + shape, lambda b, j, i: (b, j, last - i, 0, 0))

    state_spec = pl.BlockSpec((None, bdv, d_k), lambda b, j, i: (b, j, 0))
    in_specs = [
        seq(d_k), seq(d_k), seq(bdv, by_j=True),  # q, k, v
        seq(g),  # gate columns
        pl.BlockSpec((None, None, g, c), lambda b, j, i: (b, last - i, 0, 0)),  # gate rows
        pl.BlockSpec((None, None, bdv, d_k), lambda b, j, i: (b, last - i, j, 0)),  # starts
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
    kernel = functools.partial(_kernel, config=config, n_poison=n_poison)
    return tuple(pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(bh, nj, n),
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((bdv, d_k), F32)],
        input_output_aliases=aliases,
        compiler_params=_compat.tpu_compiler_params(("parallel", "parallel", "arbitrary"),
                                                    block.vmem_limit_bytes),
        interpret=interpret,
        name="linear_chunk_update_bwd",
    )(*args))
