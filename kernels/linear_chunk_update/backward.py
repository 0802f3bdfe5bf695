"""custom_vjp of the Pallas forward of `linear_chunk_update` (Pallas has no reverse-mode autodiff).

The forward kernel also writes the state at the start of every chunk (`[B·H, N, d_v, d_k]`,
linear in T). Two backwards (`LinearBlockSizes.backward`):

* "pallas" (default): a Pallas backward kernel (`pallas_tpu_backward.py`, `pallas_gpu_backward.py`)
  walks the chunks in reverse with the state cotangent dW on chip, recomputes each chunk from its
  saved start state and pulls the cotangents back with `jax.vjp` of the kernels' own chunk math,
  giving cotangents of q, k, v and of the preprocessed gate channels (log α, η_e, p);
  `pallas_backward` maps those back to η and α (and the keys, through the normalisation of η) with
  the `jax.vjp` of `kernel_gates` (XLA, elementwise).
* "xla" (fallback): a reverse `lax.scan` over chunks that recomputes one chunk at a time with the
  core's own chunk functions (`prepare_linear_chunk` + `linear_chunk`) and `jax.vjp` (the
  gradient math is the core's, one source of truth).

Memory stays linear in T either way (saved states plus one chunk of temporaries).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hope_jax.core.closed_form import effective_gates
from hope_jax.core.linear_chunk import linear_chunk, prepare_linear_chunk
from hope_jax.kernels._layout import chunk_mask, gate_layouts, log_gate
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig

Array = jax.Array
F32 = jnp.float32


def kernel_gates(config: LinearUpdateConfig, k: Array, eta: Array, alpha: Array,
                 mask) -> list[Array]:
    """[log α, η_e, p] per token ([B·H, N, C] each; p = 0 without DGD), padding frozen (D35)."""
    spec = config.level().spec
    eta_e, alpha_e, _, p = effective_gates(spec, k.astype(F32), eta.astype(F32),
                                           alpha.astype(F32), None, jnp.asarray(mask))
    p = jnp.zeros_like(eta_e) if p is None else p
    return [log_gate(alpha_e), eta_e, p]


def core_chunk(config: LinearUpdateConfig) -> Callable:
    """One chunk of one head by the core: (q, k, v, eta, alpha, mask, w) → (y, w_end)."""
    level = config.level("linear")
    spec = level.spec

    def chunk(q, k, v, eta, alpha, mask, w):
        out_dtype = q.dtype
        q, k, v, eta, alpha = (x.astype(F32) for x in (q, k, v, eta, alpha))
        maps = prepare_linear_chunk(spec, config.affine, False, config.read, False, False,
                                    q, k, v, eta, alpha, None, mask)
        y, w_end, _ = linear_chunk(maps, False, q, w, None, None)
        return y.astype(out_dtype), w_end

    return jax.vmap(chunk, in_axes=(0, 0, 0, 0, 0, None, 0))


def pallas_backward(config: LinearUpdateConfig, t_real: int, kernel: Callable,
                    gate_pad: int | None = None) -> Callable:
    """The backward of `make_op` from a Pallas backward kernel.

    kernel(q, k, v, gc, gr, starts, dy, dw_end) → (dq, dk, dv, dgc, dgr, dW_0), the cotangents of
    q, k, gc [BH, J, N, C, G] and gr [BH, J, N, G, C] per value-row block j < J (summed here).
    The gate cotangent is dgc + dgrᵀ per channel (the kernel gets each gate in both layouts) and
    goes back to (k, η, α) through `jax.vjp(kernel_gates)`.

    Returns backward(q, k, v, eta, alpha, starts, dy, dw_end) → (dq, dk, dv, deta, dalpha, dW_0).
    """

    def backward(q, k, v, eta, alpha, starts, dy, dw_end):
        mask = chunk_mask(t_real, q.shape[1], q.shape[2])
        channels, pull = jax.vjp(lambda k_, e_, a_: kernel_gates(config, k_, e_, a_, mask),
                                 k, eta, alpha)
        gc, gr = gate_layouts(channels, pad_to=gate_pad)
        dq, dk, dv, dgc, dgr, dw0 = kernel(q, k, v, gc, gr, starts, dy, dw_end)
        dg = jnp.sum(dgc, axis=1) + jnp.swapaxes(jnp.sum(dgr, axis=1), -1, -2)  # [BH, N, C, G]
        dk_gates, deta, dalpha = pull([dg[..., j] for j in range(len(channels))])
        dk = jnp.sum(dk, axis=1) + dk_gates.astype(F32)
        return (jnp.sum(dq, axis=1).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype),
                deta.astype(eta.dtype), dalpha.astype(alpha.dtype), dw0)

    return backward


def xla_backward(config: LinearUpdateConfig, t_real: int) -> Callable:
    """The fallback backward: a reverse `lax.scan` of `jax.vjp` of the core's chunk functions.

    Returns backward(q, k, v, eta, alpha, starts, dy, dw_end) → (dq, dk, dv, deta, dalpha, dW_0).
    """
    chunk = core_chunk(config)

    def backward(q, k, v, eta, alpha, starts, dy, dw):
        n, c = q.shape[1:3]
        masks = jnp.asarray(chunk_mask(t_real, n, c))
        move = lambda x: jnp.moveaxis(x, 1, 0)  # [BH, N, ...] → [N, BH, ...]

        def step(dw_next, xs):
            qn, kn, vn, en, an, mn, wn, dyn = xs
            _, pull = jax.vjp(lambda q_, k_, v_, e_, a_, w_: chunk(q_, k_, v_, e_, a_, mn, w_),
                              qn, kn, vn, en, an, wn)
            dq, dk, dv, de, da, dw_prev = pull((dyn, dw_next))
            return dw_prev, (dq, dk, dv, de, da)

        xs = (move(q), move(k), move(v), move(eta), move(alpha), masks, move(starts), move(dy))
        dw0, grads = jax.lax.scan(step, dw.astype(F32), xs, reverse=True)
        dq, dk, dv, de, da = (jnp.moveaxis(g, 0, 1) for g in grads)
        return dq, dk, dv, de, da, dw0

    return backward


@functools.cache
def make_op(config: LinearUpdateConfig, t_real: int, forward: Callable,
            backward: Callable | None = None) -> Callable:
    """The differentiable op on chunked inputs.

    forward(q, k, v, eta, alpha, w0) → (y, w_end, chunk_start_states): the Pallas forward.
    backward(q, k, v, eta, alpha, starts, dy, dw_end) → cotangents of (q, k, v, eta, alpha, w0):
    `pallas_backward(...)`, or None for `xla_backward`.
    Returns op(q, k, v, eta, alpha, w0) → (y [BH, N, C, d_v], w_end [BH, d_v, d_k]) with
    q, k [BH, N, C, d_k], v [BH, N, C, d_v], eta, alpha [BH, N, C], w0 [BH, d_v, d_k] float32.
    """
    if backward is None:
        backward = xla_backward(config, t_real)

    @jax.custom_vjp
    def op(q, k, v, eta, alpha, w0):
        y, w_end, _ = forward(q, k, v, eta, alpha, w0)
        return y, w_end

    def fwd(q, k, v, eta, alpha, w0):
        y, w_end, starts = forward(q, k, v, eta, alpha, w0)
        return (y, w_end), (q, k, v, eta, alpha, starts)

    def bwd(res, cts):
        q, k, v, eta, alpha, starts = res
        dy, dw = cts
        return backward(q, k, v, eta, alpha, starts, dy, dw)

    op.defvjp(fwd, bwd)
    return op
