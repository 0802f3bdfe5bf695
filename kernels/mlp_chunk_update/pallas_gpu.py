"""Pallas GPU (Triton) kernel of `mlp_chunk_update`, forward (backward: `pallas_gpu_backward.py`).

Grid (B·H,): one program per head walks its chunks in a `fori_loop` whose carry is the running
state (W_in, W_out, S_in, S_out), kept on chip between chunks; chunk-start states are stored for
the custom_vjp backward. The chunk's math is `_chunk_math.mlp_chunk_values`, shared with the TPU
kernel.

Limits (honest): Triton needs power-of-two sizes ≥ 16 for C, d and h. The whole state (4·h·d
floats: 256 KiB at d = 64, h = 256) is the loop carry; beyond what registers and shared memory
hold, Triton spills it to local memory, so this kernel is meant for small heads and its speed at
d = 128, h = 512 is untested (no GPU here); the table in `block_sizes.py` needs measurements.
"""
from __future__ import annotations

import functools

import jax
from jax import lax
from jax.experimental import pallas as pl

from hope_jax.kernels import _compat
from hope_jax.kernels._chunk_math import F32, mlp_chunk_values
from hope_jax.kernels._layout import gate_layouts, with_poison
from hope_jax.kernels.mlp_chunk_update.backward import kernel_gates
from hope_jax.kernels.mlp_chunk_update.block_sizes import MLPBlockSizes
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig

Array = jax.Array
GATE_CHANNELS = 8  # [log α, log β, η_e, p, m] padded to a power of two


def _kernel(q_ref, k_ref, v_ref, gc_ref, gr_ref, *refs, config: MLPUpdateConfig, n_chunks: int,
            n_poison: int):
    init_refs, refs = refs[:4], refs[4 + n_poison:]
    y_ref, end_refs, start_refs = refs[0], refs[1:5], refs[5:9]

    def chunk(n, state):
        def gate(j):
            return gc_ref[n, :, j:j + 1], gr_ref[n, j:j + 1, :]

        for dst, x in zip(start_refs, state):
            dst[n] = x
        y, new = mlp_chunk_values(
            q_ref[n].astype(F32), k_ref[n].astype(F32), v_ref[n].astype(F32),
            gate(0), gate(1), gate(2), gate(3) if config.dgd else None, gate(4), state,
            affine=config.affine, read=config.read, activation=config.activation)
        y_ref[n] = y.astype(y_ref.dtype)
        return new

    state = tuple(r[...].astype(F32) for r in init_refs)
    final = lax.fori_loop(0, n_chunks, chunk, state)
    for dst, x in zip(end_refs, final):
        dst[...] = x


def mlp_forward_gpu(config: MLPUpdateConfig, block: MLPBlockSizes, q: Array, k: Array, v: Array,
                    eta: Array, alpha: Array, beta: Array, state: tuple, mask, *,
                    interpret: bool = False, poison: bool = False):
    """Forward on chunked inputs; arguments and results as `pallas_tpu.mlp_forward_tpu`."""
    bh, n, c, d = q.shape
    h = state[0].shape[-2]
    reason = block.gpu_reason(c, d, h)
    if reason is not None:
        raise ValueError(f"mlp_chunk_update GPU kernel: {reason}")
    gc, gr = gate_layouts(kernel_gates(config, k, eta, alpha, beta, mask), pad_to=GATE_CHANNELS)
    g = gc.shape[-1]
    shapes = [(h, d), (d, h), (h, d), (d, h)]

    def whole(*dims):
        return pl.BlockSpec((None,) + dims, lambda b: (b,) + (0,) * len(dims))

    in_specs = [whole(n, c, d)] * 3 + [whole(n, c, g), whole(n, g, c)] + [whole(*s) for s in shapes]
    out_specs = [whole(n, c, d)] + [whole(*s) for s in shapes] + [whole(n, *s) for s in shapes]
    out_shape = ([jax.ShapeDtypeStruct((bh, n, c, d), q.dtype)]
                 + [jax.ShapeDtypeStruct((bh,) + s, F32) for s in shapes]
                 + [jax.ShapeDtypeStruct((bh, n) + s, F32) for s in shapes])
    args = [q, k, v, gc, gr] + [s.astype(F32) for s in state]
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
        name="mlp_chunk_update_fwd",
    )(*args)
    return outs[0], tuple(outs[1:5]), tuple(outs[5:9])
