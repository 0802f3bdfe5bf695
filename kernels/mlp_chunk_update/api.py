"""`mlp_chunk_update`: the chunked update of the residual MLP memory, with dispatch.

    y, params_T, momentum_T = mlp_chunk_update(q, k, v, eta, alpha, beta, params, momentum)

Runs the deep memory `M(x) = x + W_out σ(W_in x)` of Titans and self-modifying Titans / Hope over
a sequence in chunks of C tokens (design §3.1, §3.4, §6.2, §6.4; D2, D3, D5, D35): per-token
gradients at the chunk snapshot, momentum `S_t = β_t S_{t−1} − η_t G_t`, retention α and (with
`dgd`) the DGD preconditioner on W_in, running reads in dual form or snapshot reads. It is the
core level `config.level(h)`, started from a chunk-aligned state.

Implementations as for `linear_chunk_update`; the Pallas paths are differentiable through a
custom_vjp whose backward is the matching Pallas backward kernel (`pallas_tpu_backward.py`,
`pallas_gpu_backward.py`), or the XLA reverse scan over chunks with
`block_sizes=MLPBlockSizes(backward="xla")` (see `backward.py`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hope_jax.kernels import _dispatch
from hope_jax.kernels._layout import (chunk_mask, flat_heads, from_chunks, to_chunks,
                                      unflat_heads)
from hope_jax.kernels.mlp_chunk_update.backward import make_op, pallas_backward
from hope_jax.kernels.mlp_chunk_update.block_sizes import MLPBlockSizes, default_block_sizes
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig
from hope_jax.kernels.mlp_chunk_update.pallas_gpu import GATE_CHANNELS, mlp_forward_gpu
from hope_jax.kernels.mlp_chunk_update.pallas_gpu_backward import mlp_backward_gpu
from hope_jax.kernels.mlp_chunk_update.pallas_tpu import mlp_forward_tpu
from hope_jax.kernels.mlp_chunk_update.pallas_tpu_backward import mlp_backward_tpu
from hope_jax.kernels.mlp_chunk_update.reference import mlp_chunk_update_reference
from hope_jax.kernels.mlp_chunk_update.xla import mlp_chunk_update_xla

Array = jax.Array
OP = "mlp_chunk_update"


def _check_shapes(q, k, v, gates, params, momentum) -> None:
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"{OP}: q, k and v must have the same shape [B, T, H, d], got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    b, t, h, d = q.shape
    for name, g in gates.items():
        if g.shape != (b, t, h):
            raise ValueError(f"{OP}: {name} must have shape [B, T, H] = {(b, t, h)}, got {g.shape}")
    if len(params) != 2 or len(momentum) != 2:
        raise ValueError(f"{OP}: params and momentum must be pairs (W_in, W_out)")
    hid = params[0].shape[-2]
    want = ((b, h, hid, d), (b, h, d, hid))
    for name, pair in (("params", params), ("momentum", momentum)):
        got = tuple(x.shape for x in pair)
        if got != want:
            raise ValueError(f"{OP}: {name} must have shapes (W_in [B, H, h, d], W_out "
                             f"[B, H, d, h]) = {want}, got {got}")


@functools.cache
def _forward(kind: str, config: MLPUpdateConfig, block: MLPBlockSizes, t: int, interpret: bool):
    fn = mlp_forward_tpu if kind == "tpu" else mlp_forward_gpu

    def forward(q, k, v, eta, alpha, beta, state):
        mask = chunk_mask(t, q.shape[1], q.shape[2])
        return fn(config, block, q, k, v, eta, alpha, beta, state, mask, interpret=interpret)

    return forward


@functools.cache
def _backward(kind: str, config: MLPUpdateConfig, block: MLPBlockSizes, t: int, interpret: bool):
    """The Pallas backward of `make_op`, or None (the XLA fallback) when `block.backward="xla"`."""
    if block.backward == "xla":
        return None
    if kind == "tpu":
        kernel = functools.partial(mlp_backward_tpu, config, block, interpret=interpret)
        return pallas_backward(config, t, kernel)
    kernel = functools.partial(mlp_backward_gpu, config, block, interpret=interpret)
    return pallas_backward(config, t, kernel, gate_pad=GATE_CHANNELS)


def mlp_chunk_update(q: Array, k: Array, v: Array, eta: Array, alpha: Array | None,
                     beta: Array, params: tuple, momentum: tuple | None = None, *,
                     chunk_size: int = 64, objective: str = "l2", dgd: bool = True,
                     normalize: bool = True, read: str = "post",
                     activation: Callable[[Array], Array] = jax.nn.gelu,
                     implementation: str = "auto", block_sizes: MLPBlockSizes | None = None):
    """Chunked residual-MLP-memory update over a sequence.

    Args:
      q, k, v: queries, keys, values [B, T, H, d] (computed in float32, D30).
      eta, alpha, beta: step size η_t, retention α_t (None: α ≡ 1), momentum decay β_t [B, T, H].
      params: (W_in [B, H, h, d], W_out [B, H, d, h]), the memory at the sequence start
        (W_in is W₂ of design §3.1, the input side where DGD acts; W_out is W₁). Held in float32.
      momentum: (S_in, S_out) like params, or None for zeros (a fresh sequence).
      chunk_size, objective, dgd, normalize, read, activation: the update (`MLPUpdateConfig`).
      implementation: "auto", "reference", "xla", "pallas_tpu", "pallas_gpu" or "interpret".
      block_sizes: `MLPBlockSizes` (launch parameters and the backward, "pallas" / "xla");
        None: the tuned table's entry.

    Returns:
      (y [B, T, H, d] in q's dtype, (W_in, W_out) at the end, (S_in, S_out) at the end), float32.
    """
    config = MLPUpdateConfig(chunk_size=chunk_size, objective=objective, dgd=dgd,
                             normalize=normalize, read=read, activation=activation)
    if alpha is None:
        alpha = jnp.ones(eta.shape, jnp.float32)
    params = tuple(w.astype(jnp.float32) for w in params)
    if momentum is None:
        momentum = tuple(jnp.zeros_like(w) for w in params)
    momentum = tuple(s.astype(jnp.float32) for s in momentum)
    _check_shapes(q, k, v, dict(eta=eta, alpha=alpha, beta=beta), params, momentum)
    b, t, _, d = q.shape
    hid = params[0].shape[-2]
    c = config.chunk_size

    def block_for(platform: str) -> MLPBlockSizes:
        return block_sizes if block_sizes is not None else default_block_sizes(
            platform, q.dtype, d, hid)

    impl = _dispatch.resolve_with_block_sizes(implementation, OP, block_for, (c, d, hid))
    if impl == "reference":
        return mlp_chunk_update_reference(q, k, v, eta, alpha, beta, params, momentum, config)
    if impl == "xla":
        return mlp_chunk_update_xla(q, k, v, eta, alpha, beta, params, momentum, config)
    kind = "gpu" if impl == "pallas_gpu" else "tpu"
    block = block_for(kind)
    interpret = impl == "interpret"
    op = make_op(config, t, _forward(kind, config, block, t, interpret),
                 _backward(kind, config, block, t, interpret))
    state = tuple(flat_heads(x) for x in params + momentum)
    y, end = op(*(to_chunks(x, c) for x in (q, k, v, eta, alpha, beta)), state)
    end = tuple(unflat_heads(x, b) for x in end)
    return from_chunks(y, b, t), end[:2], end[2:]
