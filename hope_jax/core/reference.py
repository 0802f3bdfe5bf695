"""The token-by-token recurrence of a level (chunk size 1): the oracle every fast path must equal.

Plain and deliberately naive: at every token the inner gradient is taken by autodiff at the
current state `M_{t−1}`, the inner optimizer's own `update` writes `M_t`, and the output reads
`M_t(q_t)` ("post") or `M_{t−1}(q_t)` ("pre"; at C = 1 the snapshot read is the same). No chunk,
no closed form, no shared code with `closed_form.py`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.core.inner_optimizers import gradient_curvature
from hope_jax.core.level import Level, LevelState
from hope_jax.core.validation import check_level_inputs

Array = jax.Array
sg = jax.lax.stop_gradient


def reference_scan(level: Level, state: LevelState, q: Array, k: Array, v: Array, eta: Array,
                   alpha: Array | None = None, beta: Array | None = None
                   ) -> tuple[Array, LevelState]:
    """The exact recurrence (C = 1) of `level` over [B, T, H, ·] inputs; returns (y, state).

    `level.chunk_size` is ignored. In "stop" gradient mode every write is a constant
    (`M_t = M_{t−1} + stop_gradient(ΔM_t)`, D8).
    """
    check_level_inputs(level, state, q, k, v, eta, alpha, beta)
    dtype = state.memory[0].dtype
    memory, objective, optimizer = level.memory, level.objective, level.optimizer
    stop = level.gradient == "stop"

    def loss(params, k_t, v_t):
        return objective.loss(memory.apply(params, k_t), v_t)

    def one_head(params, opt_state, q, k, v, eta, alpha, beta):
        def token(carry, xs):
            params, opt_state = carry
            q_t, k_t, v_t, eta_t, alpha_t, beta_t = xs
            g = jax.grad(loss)(params, k_t, v_t)
            error = objective.error(memory.apply(params, k_t), v_t)
            hyper = dict(eta=eta_t, key=k_t, curvature=gradient_curvature(g, error))
            if alpha_t is not None:
                hyper["alpha"] = alpha_t
            if beta_t is not None:
                hyper["beta"] = beta_t
            updates, new_opt = optimizer.update(g, opt_state, params, **hyper)
            if stop:
                updates, new_opt = sg(updates), sg(new_opt)
            new_params = jax.tree.map(jnp.add, params, updates)
            read_from = new_params if level.read == "post" else params
            return (new_params, new_opt), memory.apply(read_from, q_t)

        (params, opt_state), y = jax.lax.scan(token, (params, opt_state),
                                              (q, k, v, eta, alpha, beta))
        return y, params, opt_state

    def prep(x):  # [B, T, H, ...] → [B, H, T, ...]
        return None if x is None else jnp.moveaxis(x.astype(dtype), 2, 1)

    args = tuple(map(prep, (q, k, v, eta, alpha, beta)))
    per_batch = jax.vmap(jax.vmap(one_head))
    y, params, opt_state = per_batch(tuple(w.astype(dtype) for w in state.memory), state.opt_state,
                                     *args)
    position = (jnp.asarray(k.shape[1], jnp.int32)
                + (0 if state.position is None else state.position))
    new_state = LevelState(memory=params, opt_state=opt_state, snapshot=params,
                           position=position.astype(jnp.int32))
    return jnp.moveaxis(y, 1, 2).astype(q.dtype), new_state
