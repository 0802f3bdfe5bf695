"""Objectives: output errors equal the gradient of the per-token loss."""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from level_cases import assert_close


def _huber(y, v):
    r = y - v
    return jnp.sum(jnp.where(jnp.abs(r) < 1.0, 0.5 * r ** 2, jnp.abs(r) - 0.5))


@pytest.mark.fast
@pytest.mark.parametrize("objective",
                         [core.l2(), core.dot_product(), core.objectives.custom(_huber)])
def test_error_is_gradient_of_loss(x64, objective):
    """e(y, v) = ∂ℓ/∂y for each token (l2: y − v; dot: −v; custom: autodiff)."""
    y = 3 * jax.random.normal(jax.random.PRNGKey(0), (4, 6), jnp.float64)
    v = jax.random.normal(jax.random.PRNGKey(1), (4, 6), jnp.float64)
    expected = jax.vmap(jax.grad(objective.loss))(y, v)
    assert_close(objective.error(y, v), expected, 1e-14, objective.name)


@pytest.mark.fast
def test_affine_coefficients_and_lookup():
    """l2 is e = 1·y − v, dot is e = 0·y − v; a custom loss is not assumed affine."""
    assert core.l2().affine == 1.0 and core.dot_product().affine == 0.0
    assert core.objectives.custom(_huber).affine is None
    assert core.objectives.by_name("l2").name == "l2"
    with pytest.raises(ValueError, match="unknown objective 'cosine'"):
        core.objectives.by_name("cosine")
