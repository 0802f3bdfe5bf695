"""Pallas TPU (Mosaic) kernel of `mlp_chunk_update`, forward (backward: `pallas_tpu_backward.py`).

Grid (B·H, N chunks), the chunk axis "arbitrary": the running state (W_in [h, d], W_out [d, h],
S_in, S_out) lives in four VMEM scratch buffers across the chunk loop, loaded at chunk 0 and
written out at the last chunk; each grid step also writes its chunk-start state (the custom_vjp
residual). The chunk's math is `_chunk_math.mlp_chunk_values`.
"""
from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32, mlp_chunk_values
from hope_jax.kernels._layout import gate_layouts, with_poison
from hope_jax.kernels.mlp_chunk_update.backward import kernel_gates
from hope_jax.kernels.mlp_chunk_update.block_sizes import MLPBlockSizes
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig

Array = jax.Array


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, *refs, config: MLPUpdateConfig, n_poison: int):
    init_refs, refs = refs[:4], refs[4 + n_poison:]
    y_ref, end_refs, start_refs, scratch = refs[0], refs[1:5], refs[5:9], refs[9:13]
    n = pl.program_id(1)

    @pl.when(n == 0)
    def _():
        for src, dst in zip(init_refs, scratch):
            dst[...] = src[...].astype(F32)

    state = tuple(s[...] for s in scratch)
    for dst, x in zip(start_refs, state):
        dst[...] = x

    def gate(j):
        return gc_ref[:, j:j + 1], gr_ref[j:j + 1, :]

    y, new = mlp_chunk_values(
        q_ref[...].astype(F32), k_ref[...].astype(F32), v_ref[...].astype(F32),
        gate(0), gate(1), gate(2), gate(3) if config.dgd else None, gate(4), state,
        affine=config.affine, read=config.read, activation=config.activation)
    y_ref[...] = y.astype(y_ref.dtype)
    for dst, x in zip(scratch, new):
        dst[...] = x

    @pl.when(n == pl.num_programs(1) - 1)
    def _():
        for dst, x in zip(end_refs, new):
            dst[...] = x


def mlp_forward_tpu(config: MLPUpdateConfig, block: MLPBlockSizes, q: Array, k: Array, v: Array,
                    eta: Array, alpha: Array, beta: Array, state: tuple, mask, *,
                    interpret: bool = False, poison: bool = False):
    """Forward on chunked inputs.

    Args:
      q, k, v: [BH, N, C, d]; eta, alpha, beta: [BH, N, C];
      state: (W_in [BH, h, d], W_out [BH, d, h], S_in [BH, h, d], S_out [BH, d, h]) float32;
      mask: [N, C] bool (real tokens); interpret / poison as in the linear kernel.

    Returns:
      (y [BH, N, C, d] in q's dtype, end state (4 arrays like `state`), chunk-start states
      (4 arrays [BH, N, ·, ·])).
    """
    bh, n, c, d = q.shape
    h = state[0].shape[-2]
    reason = block.tpu_reason(c, d, h)
    if reason is not None:
        raise ValueError(f"mlp_chunk_update TPU kernel: {reason}")
    gc, gr = gate_layouts(kernel_gates(config, k, eta, alpha, beta, mask))
    g = gc.shape[-1]
    shapes = [(h, d), (d, h), (h, d), (d, h)]

    def seq_spec(last):
        return pl.BlockSpec((None, None, c, last), lambda b, i: (b, i, 0, 0))

    state_specs = [pl.BlockSpec((None,) + s, lambda b, i: (b, 0, 0)) for s in shapes]
    start_specs = [pl.BlockSpec((None, None) + s, lambda b, i: (b, i, 0, 0)) for s in shapes]
    in_specs = [seq_spec(d), seq_spec(d), seq_spec(d), seq_spec(g),
                pl.BlockSpec((None, None, g, c), lambda b, i: (b, i, 0, 0))] + state_specs
    out_specs = [seq_spec(d)] + state_specs + start_specs
    out_shape = ([jax.ShapeDtypeStruct((bh, n, c, d), q.dtype)]
                 + [jax.ShapeDtypeStruct((bh,) + s, F32) for s in shapes]
                 + [jax.ShapeDtypeStruct((bh, n) + s, F32) for s in shapes])
    args = [q, k, v, gc, gr] + [s.astype(F32) for s in state]
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
        name="mlp_chunk_update_fwd",
    )(*args)
    return outs[0], tuple(outs[1:5]), tuple(outs[5:9])
