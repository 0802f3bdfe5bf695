"""`linear_chunk_update`: the chunked update of a linear (matrix) memory, with dispatch.

    y, w_T = linear_chunk_update(q, k, v, eta, alpha, w0, chunk_size=64, implementation="auto")

Runs the linear memory `M(k) = W k` over a sequence in chunks of C tokens (design §3.4, §6.4–6.5;
D2, D3, D4, D35): gradients at the chunk-start snapshot, writes `W_t = W_{t−1}(α_t I − p_t k_t k_tᵀ)
− η_t e_t k_tᵀ` (DGD / delta rule; plain retention without `dgd`), reads of the running state. It
is the core level `config.level()` (DeltaNet, Gated DeltaNet, Titans-linear without momentum,
Hope's linear memories), started from a fresh, chunk-aligned state.

Implementations (`implementation=`, see `hope_jax.kernels._dispatch`): "reference" (core generic
path), "xla" (core linear fast path), "pallas_tpu", "pallas_gpu", "interpret" (the TPU kernel in
the Pallas interpreter), "auto". The Pallas paths are differentiable through a custom_vjp whose
backward is the matching Pallas backward kernel (`pallas_tpu_backward.py`, `pallas_gpu_backward.py`;
"interpret" runs the TPU one in the interpreter), or the XLA reverse scan over chunks with
`block_sizes=LinearBlockSizes(backward="xla")` (see `backward.py`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hope_jax.kernels import _dispatch
from hope_jax.kernels._layout import (chunk_mask, flat_heads, from_chunks, num_chunks, to_chunks,
                                      unflat_heads)
from hope_jax.kernels.linear_chunk_update.backward import make_op, pallas_backward
from hope_jax.kernels.linear_chunk_update.block_sizes import LinearBlockSizes, default_block_sizes
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig
from hope_jax.kernels.linear_chunk_update.pallas_gpu import GATE_CHANNELS, linear_forward_gpu
from hope_jax.kernels.linear_chunk_update.pallas_gpu_backward import linear_backward_gpu
from hope_jax.kernels.linear_chunk_update.pallas_tpu import linear_forward_tpu
from hope_jax.kernels.linear_chunk_update.pallas_tpu_backward import linear_backward_tpu
from hope_jax.kernels.linear_chunk_update.reference import linear_chunk_update_reference
from hope_jax.kernels.linear_chunk_update.xla import linear_chunk_update_xla

Array = jax.Array
OP = "linear_chunk_update"


def _check_shapes(q, k, v, eta, alpha, w0) -> None:
    if q.ndim != 4 or k.shape != q.shape:
        raise ValueError(f"{OP}: q and k must have the same shape [B, T, H, d_k], got "
                         f"{q.shape} and {k.shape}")
    b, t, h, d_k = k.shape
    if v.ndim != 4 or v.shape[:3] != (b, t, h):
        raise ValueError(f"{OP}: v must have shape [B, T, H, d_v] = [{b}, {t}, {h}, d_v], "
                         f"got {v.shape}")
    for name, g in (("eta", eta), ("alpha", alpha)):
        if g.shape != (b, t, h):
            raise ValueError(f"{OP}: {name} must have shape [B, T, H] = {(b, t, h)}, got {g.shape}")
    if w0.shape != (b, h, v.shape[-1], d_k):
        raise ValueError(f"{OP}: w0 must have shape [B, H, d_v, d_k] = "
                         f"{(b, h, v.shape[-1], d_k)}, got {w0.shape}")


@functools.cache
def _forward(kind: str, config: LinearUpdateConfig, block: LinearBlockSizes, t: int,
             interpret: bool):
    fn = linear_forward_tpu if kind == "tpu" else linear_forward_gpu

    def forward(q, k, v, eta, alpha, w0):
        mask = chunk_mask(t, q.shape[1], q.shape[2])
        return fn(config, block, q, k, v, eta, alpha, w0, mask, interpret=interpret)

    return forward


@functools.cache
def _backward(kind: str, config: LinearUpdateConfig, block: LinearBlockSizes, t: int,
              interpret: bool):
    """The Pallas backward of `make_op`, or None (the XLA fallback) when `block.backward="xla"`."""
    if block.backward == "xla":
        return None
    if kind == "tpu":
        kernel = functools.partial(linear_backward_tpu, config, block, interpret=interpret)
        return pallas_backward(config, t, kernel)
    kernel = functools.partial(linear_backward_gpu, config, block, interpret=interpret)
    return pallas_backward(config, t, kernel, gate_pad=GATE_CHANNELS)


def _run_pallas(kind: str, config: LinearUpdateConfig, block: LinearBlockSizes, interpret: bool,
                q, k, v, eta, alpha, w0):
    b, t = q.shape[:2]
    c = config.chunk_size
    op = make_op(config, t, _forward(kind, config, block, t, interpret),
                 _backward(kind, config, block, t, interpret))
    y, w_end = op(*(to_chunks(x, c) for x in (q, k, v, eta, alpha)), flat_heads(w0))
    return from_chunks(y, b, t), unflat_heads(w_end, b)


def linear_chunk_update(q: Array, k: Array, v: Array, eta: Array, alpha: Array | None,
                        w0: Array, *, chunk_size: int = 64, objective: str = "l2",
                        dgd: bool = True, normalize: bool = True, gated: bool = False,
                        read: str = "post", implementation: str = "auto",
                        block_sizes: LinearBlockSizes | None = None) -> tuple[Array, Array]:
    """Chunked linear-memory update over a sequence, from the state `w0`.

    Args:
      q, k: queries and keys [B, T, H, d_k] (any float dtype; computed in float32, D30).
      v: values [B, T, H, d_v].
      eta: inner step sizes η_t [B, T, H]; alpha: retention α_t [B, T, H] (None: α ≡ 1).
      w0: the state at the sequence start [B, H, d_v, d_k] (held in float32).
      chunk_size, objective, dgd, normalize, gated, read: the update (`LinearUpdateConfig`).
      implementation: "auto", "reference", "xla", "pallas_tpu", "pallas_gpu" or "interpret".
      block_sizes: kernel blocking and the backward ("pallas" / "xla") (`LinearBlockSizes`);
        None: the tuned table's entry.

    Returns:
      (y [B, T, H, d_v] in q's dtype, W_T [B, H, d_v, d_k] float32).
    """
    config = LinearUpdateConfig(chunk_size=chunk_size, objective=objective, dgd=dgd,
                                normalize=normalize, gated=gated, read=read)
    if alpha is None:
        alpha = jnp.ones(eta.shape, jnp.float32)
    _check_shapes(q, k, v, eta, alpha, w0)
    w0 = w0.astype(jnp.float32)
    d_k, d_v = k.shape[-1], v.shape[-1]
    c = config.chunk_size

    def block_for(platform: str) -> LinearBlockSizes:
        return block_sizes if block_sizes is not None else default_block_sizes(
            platform, q.dtype, d_k, d_v)

    impl = _dispatch.resolve_with_block_sizes(implementation, OP, block_for, (c, d_k, d_v))
    if impl == "reference":
        return linear_chunk_update_reference(q, k, v, eta, alpha, w0, config)
    if impl == "xla":
        return linear_chunk_update_xla(q, k, v, eta, alpha, w0, config)
    kind = "gpu" if impl == "pallas_gpu" else "tpu"
    return _run_pallas(kind, config, block_for(kind), impl == "interpret", q, k, v, eta, alpha, w0)


# Number of chunks the ops split a sequence into (re-exported for callers sizing buffers).
__all__ = ["linear_chunk_update", "num_chunks"]
