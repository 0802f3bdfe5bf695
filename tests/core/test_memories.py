"""Memories: analytic layer errors against autodiff, shapes, initialisation, bad configurations."""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from level_cases import MEMORIES, assert_close


@pytest.mark.fast
@pytest.mark.parametrize("memory_name", sorted(MEMORIES))
@pytest.mark.parametrize("objective", [core.l2(), core.dot_product()])
def test_outer_product_gradients_equal_autodiff(x64, memory_name, objective):
    """Σ_t δ_{l,t} h_{l−1,t}ᵀ from `backward` equals jax.grad of Σ_t ℓ(M(k_t), v_t) (design
    §3.1)."""
    memory = MEMORIES[memory_name]()
    d = 5
    params = tuple(w[0] for w in memory.init(jax.random.PRNGKey(0), 1, d, d, jnp.float64))
    k = jax.random.normal(jax.random.PRNGKey(1), (7, d), jnp.float64)
    v = jax.random.normal(jax.random.PRNGKey(2), (7, d), jnp.float64)
    y, cache = memory.forward_cached(params, k)
    deltas = memory.backward(params, cache, objective.error(y, v))
    analytic = tuple(dl.T @ a for dl, a in zip(deltas, cache.inputs))

    def total(p):
        return sum(objective.loss(memory.apply(p, k[i]), v[i]) for i in range(k.shape[0]))

    assert_close(analytic, jax.grad(total)(params), 1e-12, memory_name)
    assert_close(y, jax.vmap(lambda x: memory.apply(params, x))(k), 1e-14, "forward")


@pytest.mark.fast
def test_residual_mlp_shapes_and_init_scales():
    """x + W₁σ(W₂x): W₂ [h, d] ~ N(0, 1/d), W₁ [d, h] ~ N(0, 0.02²) per head (D19)."""
    memory = core.residual_mlp_memory(expansion=4)
    w2, w1 = memory.init(jax.random.PRNGKey(0), 8, 64, 64)
    assert w2.shape == (8, 256, 64) and w1.shape == (8, 64, 256)
    assert abs(float(jnp.std(w2)) - 64 ** -0.5) < 0.01
    assert abs(float(jnp.std(w1)) - 0.02) < 0.002
    x = jnp.ones((3, 8, 64))
    assert core.multi_head_apply(memory, (w2, w1), x).shape == (3, 8, 64)


@pytest.mark.fast
def test_matrix_memory_allows_different_widths():
    """A matrix memory maps d_k → d_v; a residual memory needs d_k == d_v."""
    (w,) = core.matrix_memory().init(jax.random.PRNGKey(0), 2, 3, 5)
    assert w.shape == (2, 5, 3)
    with pytest.raises(ValueError, match="residual memory needs key width == value width"):
        core.residual_mlp_memory().init(jax.random.PRNGKey(0), 2, 3, 5)


@pytest.mark.fast
@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=0), "depth must be >= 1"),
    (dict(hidden=0), "hidden must be >= 1"),
    (dict(expansion=-1.0), "expansion must be > 0"),
])
def test_bad_memory_configs_raise(kwargs, match):
    """Impossible memory configurations fail at construction with the field named."""
    with pytest.raises(ValueError, match=match):
        core.MLPMemory(**kwargs)
