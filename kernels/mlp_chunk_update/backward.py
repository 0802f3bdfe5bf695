"""custom_vjp of the Pallas forward of `mlp_chunk_update` (Pallas has no reverse-mode autodiff).

As for the linear op: the forward kernel writes the chunk-start state (W_in, W_out, S_in, S_out)
of every chunk. Two backwards (`MLPBlockSizes.backward`):

* "pallas" (default): the Pallas backward kernel (`pallas_tpu_backward.py`,
  `pallas_gpu_backward.py`): chunks in reverse, the state cotangent on chip, each chunk recomputed
  from its start state and pulled back with `jax.vjp` of the kernels' chunk math; the cotangents
  of the preprocessed gates (log α, log β, η_e, p) go back to η, α, β (and k) through
  `jax.vjp(kernel_gates)` in `pallas_backward`.
* "xla" (fallback): a reverse `lax.scan` over chunks recomputing one chunk at a time with the
  core's closed form (`prepare_chunk` + `closed_form_chunk`) and `jax.vjp`.

Memory is linear in T either way.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hope_jax.core.closed_form import closed_form_chunk, effective_gates, prepare_chunk
from hope_jax.kernels._layout import chunk_mask, gate_layouts, log_gate
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig

Array = jax.Array
F32 = jnp.float32


def kernel_gates(config: MLPUpdateConfig, k: Array, eta: Array, alpha: Array, beta: Array,
                 mask) -> list[Array]:
    """[log α, log β, η_e, p, m] per token ([B·H, N, C] each), padding frozen (D35)."""
    spec = config.level(1).spec
    mask = jnp.asarray(mask)
    eta_e, alpha_e, beta_e, p = effective_gates(spec, k.astype(F32), eta.astype(F32),
                                                alpha.astype(F32), beta.astype(F32), mask)
    p = jnp.zeros_like(eta_e) if p is None else p
    m = jnp.broadcast_to(mask, eta_e.shape).astype(F32)
    return [log_gate(alpha_e), log_gate(beta_e), eta_e, p, m]


def core_chunk(config: MLPUpdateConfig, hidden: int) -> Callable:
    """One chunk of one head by the core: (q, k, v, eta, alpha, beta, mask, state) → (y, state)."""
    level = config.level(hidden, "closed_form")
    spec = level.spec

    def chunk(q, k, v, eta, alpha, beta, mask, state):
        out_dtype = q.dtype
        q, k, v, eta, alpha, beta = (x.astype(F32) for x in (q, k, v, eta, alpha, beta))
        w_in, w_out, s_in, s_out = state
        prep = prepare_chunk(spec, False, q, k, eta, alpha, beta, mask)
        y, run, mom = closed_form_chunk(level.memory, level.objective, spec, config.read, False,
                                        (w_in, w_out), (s_in, s_out), (w_in, w_out), q, k, v, prep)
        return y.astype(out_dtype), run + mom

    return jax.vmap(chunk, in_axes=(0, 0, 0, 0, 0, 0, None, 0))


def pallas_backward(config: MLPUpdateConfig, t_real: int, kernel: Callable,
                    gate_pad: int | None = None) -> Callable:
    """The backward of `make_op` from a Pallas backward kernel.

    kernel(q, k, v, gc, gr, starts, dy, dstate_end) → (dq, dk, dv, dgc [BH, N, C, G],
    dgr [BH, N, G, C], dstate_0). The gate cotangent is dgc + dgrᵀ per channel; it goes back to
    (k, η, α, β) through `jax.vjp(kernel_gates)`.

    Returns backward(q, k, v, eta, alpha, beta, starts, dy, dstate_end) → cotangents of
    (q, k, v, eta, alpha, beta, state).
    """

    def backward(q, k, v, eta, alpha, beta, starts, dy, dstate):
        mask = chunk_mask(t_real, q.shape[1], q.shape[2])
        channels, pull = jax.vjp(
            lambda k_, e_, a_, b_: kernel_gates(config, k_, e_, a_, b_, mask), k, eta, alpha, beta)
        gc, gr = gate_layouts(channels, pad_to=gate_pad)
        dq, dk, dv, dgc, dgr, d0 = kernel(q, k, v, gc, gr, tuple(starts), dy, tuple(dstate))
        dg = dgc + jnp.swapaxes(dgr, -1, -2)  # [BH, N, C, G]
        dk_gates, deta, dalpha, dbeta = pull([dg[..., j] for j in range(len(channels))])
        return (dq.astype(q.dtype), (dk + dk_gates.astype(F32)).astype(k.dtype),
                dv.astype(v.dtype), deta.astype(eta.dtype), dalpha.astype(alpha.dtype),
                dbeta.astype(beta.dtype), tuple(d0))

    return backward


def xla_backward(config: MLPUpdateConfig, t_real: int) -> Callable:
    """The fallback backward: a reverse `lax.scan` of `jax.vjp` of the core's closed form.

    Returns backward(q, k, v, eta, alpha, beta, starts, dy, dstate_end) → cotangents of
    (q, k, v, eta, alpha, beta, state).
    """

    def backward(q, k, v, eta, alpha, beta, starts, dy, dstate):
        n, c = q.shape[1:3]
        chunk = core_chunk(config, starts[0].shape[-2])
        masks = jnp.asarray(chunk_mask(t_real, n, c))
        move = lambda x: jnp.moveaxis(x, 1, 0)  # [BH, N, ...] → [N, BH, ...]

        def step(d_next, xs):
            qn, kn, vn, en, an, bn, mn, sn, dyn = xs

            def f(q_, k_, v_, e_, a_, b_, s_):
                return chunk(q_, k_, v_, e_, a_, b_, mn, s_)

            _, pull = jax.vjp(f, qn, kn, vn, en, an, bn, sn)
            dq, dk, dv, de, da, db, d_prev = pull((dyn, d_next))
            return d_prev, (dq, dk, dv, de, da, db)

        xs = (move(q), move(k), move(v), move(eta), move(alpha), move(beta), masks,
              tuple(move(s) for s in starts), move(dy))
        d0, grads = jax.lax.scan(step, tuple(d.astype(F32) for d in dstate), xs, reverse=True)
        return tuple(jnp.moveaxis(g, 0, 1) for g in grads) + (d0,)

    return backward


@functools.cache
def make_op(config: MLPUpdateConfig, t_real: int, forward: Callable,
            backward: Callable | None = None) -> Callable:
    """The differentiable op on chunked inputs.

    forward(q, k, v, eta, alpha, beta, state) → (y, state_end, chunk_start_states).
    backward(q, k, v, eta, alpha, beta, starts, dy, dstate_end) → cotangents of the inputs:
    `pallas_backward(...)`, or None for `xla_backward`.
    Returns op(q, k, v, eta, alpha, beta, state) → (y [BH, N, C, d], state_end) with q, k, v
    [BH, N, C, d], gates [BH, N, C], state = (W_in [BH, h, d], W_out [BH, d, h], S_in, S_out) f32.
    """
    if backward is None:
        backward = xla_backward(config, t_real)

    @jax.custom_vjp
    def op(q, k, v, eta, alpha, beta, state):
        y, state_end, _ = forward(q, k, v, eta, alpha, beta, state)
        return y, state_end

    def fwd(q, k, v, eta, alpha, beta, state):
        y, state_end, starts = forward(q, k, v, eta, alpha, beta, state)
        return (y, state_end), (q, k, v, eta, alpha, beta, starts)

    def bwd(res, cts):
        q, k, v, eta, alpha, beta, starts = res
        dy, dstate = cts
        return backward(q, k, v, eta, alpha, beta, starts, dy, dstate)

    op.defvjp(fwd, bwd)
    return op
