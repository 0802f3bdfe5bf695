"""The curvature step's chunk-causal factor μ_t (docs/hope.md, "Chunk-causal curvature step").

All gradients of a chunk are taken at one snapshot (D2), so C tokens that want the same correction
would each take it in full: the per-token bound η/(1 + ηρ) alone corrects ~C× past the target.
μ_t = 1 + ⟨g_t, W_{t−1} − W_snap⟩/‖e_t‖² scales each step by what the running state has left of
its error. These are closed-form properties of the scan, not comparisons with another path.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from hope_jax.core.inner_optimizers import remaining_error_fraction


def _write_once(keys, targets, chunk, normalize, memory=None):
    """Error ‖M(k) − v‖ at the first key before and after one scan, η = 1."""
    memory = memory or core.residual_mlp_memory(expansion=2)
    level = core.Level(memory, core.l2(), core.gd(retention=False, normalize=normalize),
                       chunk_size=chunk)
    b, t, h, d = keys.shape
    params = level.memory.init(jax.random.PRNGKey(1), h, d, d, jnp.float64)
    eta = jnp.ones((b, t, h), jnp.float64)
    _, state = core.chunked_scan(level, level.init_state(params, b), keys, keys, targets, eta=eta)
    error = lambda w: jnp.linalg.norm(  # noqa: E731
        jax.vmap(jax.vmap(level.memory.apply))(w, keys[:, 0]) - targets[:, 0], axis=-1)
    before = error(jax.tree.map(lambda w: jnp.broadcast_to(w, (b,) + w.shape), params))
    return before, error(state.memory)


def _repeated(copies: int):
    k = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 3, 8), jnp.float64)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(jax.random.PRNGKey(2), (2, 1, 3, 8), jnp.float64)
    return jnp.repeat(k, copies, axis=1), jnp.repeat(v, copies, axis=1)


@pytest.mark.fast
def test_repeated_key_chunk_contracts_like_the_recurrence(x64):
    """16 copies of one key/target pair in one chunk of 16: with μ the write contracts the error
    (like 16 chunks of one token, the exact recurrence); the per-token bound alone overshoots
    past the target (1.6–9.4× the starting error here)."""
    keys, targets = _repeated(16)
    before, causal = _write_once(keys, targets, 16, "curvature")
    _, per_token = _write_once(keys, targets, 16, "curvature_token")
    _, exact = _write_once(keys, targets, 1, "curvature")
    assert bool(jnp.all(causal < 0.5 * before)), (before, causal)
    assert bool(jnp.all(exact < 0.1 * before)), (before, exact)
    assert bool(jnp.all(per_token > before)), (before, per_token)


@pytest.mark.fast
def test_remaining_error_fraction_closed_forms(x64):
    """μ = 1 at the snapshot and for a zero error; a step −f g/ρ along g leaves 1 − f."""
    g = (jax.random.normal(jax.random.PRNGKey(3), (4, 3), jnp.float64),)
    e = jax.random.normal(jax.random.PRNGKey(4), (4,), jnp.float64)
    w0 = (jnp.zeros((4, 3), jnp.float64),)
    assert float(remaining_error_fraction(g, e, w0, w0)) == 1.0
    assert float(remaining_error_fraction(g, 0 * e, (g[0] + 1,), w0)) == 1.0
    rho = jnp.sum(g[0] ** 2) / jnp.sum(e ** 2)
    moved = (-0.3 * g[0] / rho,)
    assert jnp.allclose(remaining_error_fraction(g, e, moved, w0), 0.7, rtol=1e-12)
