"""The curvature-normalised step counts every gradient of its chunk (docs/hope.md, "Stable writes
that matter").

Within a chunk all gradients are taken at one snapshot (D2), so C tokens that want the same
correction each take it in full: with the per-token bound η/(1 + ηρ) the chunk corrects ~C× past
its target. The chunk-aware r_t = Σ_s |g_t·g_s| / (‖e_t‖‖e_s‖) keeps the summed correction below
the error. These checks are closed-form properties, not comparisons with the implementation.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from hope_jax.core.inner_optimizers import chunk_curvature, gradient_curvature


def _write_once(keys, targets, chunk):
    """Error ‖M(k) − v‖ at every token after one scan of a residual-MLP memory, η = 1."""
    level = core.Level(core.residual_mlp_memory(expansion=2), core.l2(),
                       core.gd(retention=False, normalize="curvature"), chunk_size=chunk)
    b, t, h, d = keys.shape
    params = level.memory.init(jax.random.PRNGKey(1), h, d, d, jnp.float64)
    eta = jnp.ones((b, t, h), jnp.float64)
    _, state = core.chunked_scan(level, level.init_state(params, b), keys, keys, targets, eta=eta)
    error = lambda w: jnp.linalg.norm(
        jax.vmap(jax.vmap(level.memory.apply))(w, keys[:, 0]) - targets[:, 0], axis=-1)
    before = error(jax.tree.map(lambda w: jnp.broadcast_to(w, (b,) + w.shape), params))
    return before, error(state.memory)


@pytest.mark.fast
def test_repeated_key_chunk_never_corrects_past_its_target(x64):
    """16 copies of one key/target pair in one chunk: the write halves the error at least and never
    overshoots; summing 16 per-token steps η/(1 + ηρ) overshoots many times over."""
    k = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 3, 8), jnp.float64)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(jax.random.PRNGKey(2), (2, 1, 3, 8), jnp.float64)
    keys, targets = jnp.repeat(k, 16, axis=1), jnp.repeat(v, 16, axis=1)
    before, after = _write_once(keys, targets, chunk=16)
    assert bool(jnp.all(after < 0.5 * before)), (before, after)
    # The same chunk split into 16 chunks of one token is the exact recurrence: also contracting.
    _, after_c1 = _write_once(keys, targets, chunk=1)
    assert bool(jnp.all(after_c1 < 0.1 * before))


@pytest.mark.fast
def test_chunk_curvature_closed_forms(x64):
    """r_t = ρ_t for one token and for orthogonal gradients; C identical gradients give C ρ."""
    g = jax.random.normal(jax.random.PRNGKey(3), (5, 4, 3), jnp.float64)
    e = jax.random.normal(jax.random.PRNGKey(4), (5, 2), jnp.float64)
    rho = jax.vmap(gradient_curvature)((g,), e)
    same = chunk_curvature((jnp.repeat(g[:1], 5, 0),), jnp.repeat(e[:1], 5, 0))
    assert jnp.allclose(same, 5 * rho[0], rtol=1e-12)
    eye = jnp.eye(12, dtype=jnp.float64)[:5].reshape(5, 4, 3) * jnp.arange(1.0, 6.0)[:, None, None]
    assert jnp.allclose(chunk_curvature((eye,), e), jax.vmap(gradient_curvature)((eye,), e))
    assert jnp.allclose(chunk_curvature((g[:1],), e[:1]), rho[:1], rtol=1e-12)
    # Padding (live = 0) counts for nothing; a zero error counts for nothing.
    live = jnp.array([1, 1, 0, 1, 0], bool)
    r = chunk_curvature((g,), e, live)
    assert jnp.allclose(r[live], chunk_curvature((g[live],), e[live]), rtol=1e-12)
    r0 = chunk_curvature((g,), e.at[1].set(0.0))
    assert float(r0[1]) == 0.0 and bool(jnp.all(jnp.isfinite(r0)))
