"""Pallas TPU (Mosaic) backward kernel of `mlp_chunk_update`.

Grid (B·H, N chunks); the chunk axis is "arbitrary" and walked in REVERSE (index maps read chunk
N−1−i at step i). The cotangent of the running state (dW_in, dW_out, dS_in, dS_out) stays in four
VMEM scratch buffers across the chunk loop: loaded from the cotangent of the end state at the
first step, written out as the cotangent of the initial state at the last. Per chunk, on chip:
recompute `_chunk_math.mlp_chunk_values` from the saved chunk-start state and pull (dy, d state_end)
back with `jax.vjp` traced in the kernel body (DGD solve by `unit_lower_solve_diff`; σ's
derivative, itself a `jax.jvp`, is differentiated once more, elementwise). Gate cotangents come
back for the preprocessed channels [log α, log β, η_e, p] in column and row layout (the write
mask m gets none); `backward.pallas_backward` maps them to η, α, β.
"""
from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32, mlp_chunk_values
from hope_jax.kernels._layout import load_gates, store_gates, with_poison
from hope_jax.kernels.mlp_chunk_update.block_sizes import MLPBlockSizes
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig

Array = jax.Array
MASK_CHANNEL = 4  # gate channels: [log α, log β, η_e, p, m]


def n_gate_channels(config: MLPUpdateConfig) -> int:
    """Differentiated gate channels: [log α, log β, η_e] and p with DGD."""
    return 4 if config.dgd else 3


def chunk_vjp(config: MLPUpdateConfig, q: Array, k: Array, v: Array, cols: list[Array],
              rows: list[Array], mask: tuple[Array, Array], state: tuple, dy: Array,
              dstate: tuple) -> tuple:
    """Cotangents of one chunk (shared by the TPU and GPU backward kernels).

    Args:
      q, k, v [C, d]; cols / rows: gate channels [log α, log β, η_e(, p)] as [C, 1] / [1, C];
      mask: the write mask (column, row), not differentiated; state: the chunk-start
      (W_in, W_out, S_in, S_out); dy [C, d]; dstate: cotangent of the chunk-end state. float32.

    Returns:
      (dq, dk, dv, [d col_j], [d row_j], d state_start), float32.
    """

    def chunk(q_, k_, v_, state_, cols_, rows_):
        g = list(zip(cols_, rows_))
        return mlp_chunk_values(q_, k_, v_, g[0], g[1], g[2], g[3] if config.dgd else None, mask,
                                state_, affine=config.affine, read=config.read,
                                activation=config.activation, differentiable=True)

    _, pull = jax.vjp(chunk, q, k, v, tuple(state), cols, rows)
    dq, dk, dv, dstart, dcols, drows = pull((dy, tuple(dstate)))
    return dq, dk, dv, list(dcols), list(drows), dstart


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, *refs, config: MLPUpdateConfig, n_poison: int):
    start_refs, dy_ref, dend_refs = refs[:4], refs[4], refs[5:9]
    refs = refs[9 + n_poison:]
    dq_ref, dk_ref, dv_ref, dgc_ref, dgr_ref = refs[:5]
    d0_refs, scratch = refs[5:9], refs[9:13]
    i = pl.program_id(1)

    @pl.when(i == 0)
    def _():
        for src, dst in zip(dend_refs, scratch):
            dst[...] = src[...].astype(F32)

    cols, rows = load_gates(gc_ref, gr_ref, range(n_gate_channels(config)))
    mask = load_gates(gc_ref, gr_ref, [MASK_CHANNEL])
    dq, dk, dv, dgc, dgr, dstart = chunk_vjp(
        config, q_ref[...].astype(F32), k_ref[...].astype(F32), v_ref[...].astype(F32),
        cols, rows, (mask[0][0], mask[1][0]), tuple(r[...] for r in start_refs),
        dy_ref[...].astype(F32), tuple(s[...] for s in scratch))
    dq_ref[...] = dq
    dk_ref[...] = dk
    dv_ref[...] = dv
    store_gates(dgc_ref, dgr_ref, dgc, dgr)
    for dst, x in zip(scratch, dstart):
        dst[...] = x

    @pl.when(i == pl.num_programs(1) - 1)
    def _():
        for dst, x in zip(d0_refs, dstart):
            dst[...] = x


def mlp_backward_tpu(config: MLPUpdateConfig, block: MLPBlockSizes, q: Array, k: Array,
                     v: Array, gc: Array, gr: Array, starts: tuple, dy: Array, dend: tuple, *,
                     interpret: bool = False, poison: bool = False) -> tuple:
    """Backward on chunked inputs.

    Args:
      q, k, v [BH, N, C, d]; gc [BH, N, C, G], gr [BH, N, G, C] (the forward's gate layouts);
      starts: chunk-start states (W_in, W_out, S_in, S_out) [BH, N, ·, ·] f32; dy [BH, N, C, d];
      dend: cotangent of the end state (4 arrays [BH, ·, ·]).

    Returns, float32:
      (dq, dk, dv [BH, N, C, d], dgc [BH, N, C, G], dgr [BH, N, G, C], d state_0 (4 arrays)).
    """
    bh, n, c, d = q.shape
    h = starts[0].shape[-2]
    reason = block.tpu_reason(c, d, h)
    if reason is not None:
        raise ValueError(f"mlp_chunk_update TPU backward kernel: {reason}")
    g = gc.shape[-1]
    last = n - 1
    shapes = [(h, d), (d, h), (h, d), (d, h)]

    def chunked(*dims):  # a per-chunk block, chunks read in reverse
        return pl.BlockSpec((None, None) + dims, lambda b, i: (b, last - i) + (0,) * len(dims))

    state_specs = [pl.BlockSpec((None,) + s, lambda b, i: (b, 0, 0)) for s in shapes]
    in_specs = ([chunked(c, d)] * 3 + [chunked(c, g), chunked(g, c)]
                + [chunked(*s) for s in shapes] + [chunked(c, d)] + state_specs)
    out_specs = [chunked(c, d)] * 3 + [chunked(c, g), chunked(g, c)] + state_specs
    out_shape = ([jax.ShapeDtypeStruct((bh, n, c, d), F32)] * 3
                 + [jax.ShapeDtypeStruct((bh, n, c, g), F32),
                    jax.ShapeDtypeStruct((bh, n, g, c), F32)]
                 + [jax.ShapeDtypeStruct((bh,) + s, F32) for s in shapes])
    args = [q, k, v, gc, gr, *starts, dy, *(x.astype(F32) for x in dend)]
    args, in_specs, aliases, n_poison = with_poison(poison, args, in_specs, out_specs, out_shape)
    kernel = functools.partial(_kernel, config=config, n_poison=n_poison)
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(bh, n),
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM(s, F32) for s in shapes],
        input_output_aliases=aliases,
        compiler_params=_compat.tpu_compiler_params(("parallel", "arbitrary"),
                                                    block.vmem_limit_bytes),
        interpret=interpret,
        name="mlp_chunk_update_bwd",
    )(*args)
    return tuple(outs[:5]) + (tuple(outs[5:9]),)
