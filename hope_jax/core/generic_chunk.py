"""One chunk of a level on the generic path: any memory × objective × inner optimizer.

The chunk semantics of D2 written directly: every token's gradient is taken at the chunk's
snapshot by autodiff (materialised, one per token), then the inner optimizer's own `update` is
applied token by token to the running state, which is read before ("pre"), after ("post") the
write, or not at all ("snapshot"). This is the path for optimizers without a canonical recurrence
and the independent check of the closed form (`closed_form.py`), which must equal it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.core.inner_optimizers import (InnerTransform, RecurrenceSpec, gradient_curvature,
                                            remaining_error_fraction)
from hope_jax.core.memories import MLPMemory
from hope_jax.core.objectives import Objective

Array = jax.Array
sg = jax.lax.stop_gradient


def snapshot_gradients(memory: MLPMemory, objective: Objective, snap: tuple, k: Array,
                       v: Array) -> tuple:
    """∇_W ℓ(M_snap(k_t), v_t) for every token t, by autodiff: leaves [C, out_l, in_l]."""

    def loss(params, k_t, v_t):
        return objective.loss(memory.apply(params, k_t), v_t)

    return jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(snap, k, v)


def generic_chunk(memory: MLPMemory, objective: Objective, optimizer: InnerTransform, read: str,
                  stop_writes: bool, run: tuple, opt_state, snap: tuple, q: Array, k: Array,
                  v: Array, eta: Array, alpha: Array | None, beta: Array | None,
                  mask: Array | None, spec: RecurrenceSpec | None = None):
    """Reads and writes of one chunk for one head of one sequence (shapes as `closed_form_chunk`).

    spec: the level's canonical recurrence (`Level.spec`), read only for the chunk-causal factor
    of the curvature step (`spec.step_chunk_causal`: μ_t from the running state before token t).
    Returns (y [C, d_out], new running memory, new optimizer state).
    """
    live_run = run
    if stop_writes:
        run, snap, k, v, eta = sg(run), sg(snap), sg(k), sg(v), sg(eta)
        opt_state = sg(opt_state)
        alpha = None if alpha is None else sg(alpha)
        beta = None if beta is None else sg(beta)
    c = k.shape[0]
    grads = snapshot_gradients(memory, objective, snap, k, v)
    errors = objective.error(memory.apply(snap, k), v)
    curvature = jax.vmap(gradient_curvature)(grads, errors)  # ρ_t at the snapshot, like G_t
    ones = jnp.ones((c,), k.dtype)
    mask = jnp.ones((c,), bool) if mask is None else mask
    causal = spec is not None and spec.step_curvature and spec.step_chunk_causal

    def readable(params):
        if not stop_writes:
            return params
        return tuple(w + (lw - sg(lw)) for w, lw in zip(params, live_run))

    def token(carry, xs):
        params, state = carry
        g, q_t, k_t, eta_t, alpha_t, beta_t, m_t, rho_t, e_t = xs
        y_pre = memory.apply(readable(params), q_t)
        hyper = dict(eta=eta_t, key=k_t, curvature=rho_t)
        if causal:
            hyper["chunk_scale"] = remaining_error_fraction(g, e_t, params, snap)
        if alpha is not None:
            hyper["alpha"] = alpha_t
        if beta is not None:
            hyper["beta"] = beta_t
        updates, new_state = optimizer.update(g, state, params, **hyper)
        new_params = jax.tree.map(lambda w, du: jnp.where(m_t, w + du, w), params, updates)
        new_state = jax.tree.map(lambda a, b: jnp.where(m_t, a, b), new_state, state)
        y_post = memory.apply(readable(new_params), q_t)
        return (new_params, new_state), (y_pre, y_post)

    xs = (grads, q, k, eta, ones if alpha is None else alpha, ones if beta is None else beta, mask,
          curvature, errors)
    (new_run, new_state), (y_pre, y_post) = jax.lax.scan(token, (run, opt_state), xs)
    if read == "snapshot":
        y = memory.apply(readable(snap), q)
    else:
        y = y_post if read == "post" else y_pre
    if stop_writes:
        new_run = tuple(w + (lw - sg(lw)) for w, lw in zip(new_run, live_run))
    return y, new_run, new_state
