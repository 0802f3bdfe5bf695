"""No NaN/Inf in forward + backward of each memory layer at T = 16384 (random inputs, default
gates)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixer_cases import MEMORY_MIXERS, MIXERS

D, T = 16, 16384

# Titans runs at its factory's step bound (eta_max = 0.1, unit-norm values): at D19's eta_max = 1
# it diverges within ~200 tokens (docs/layers.md); see test_titans_d19_gates_diverge.
CASES = [pytest.param(n, {}) for n in MEMORY_MIXERS]


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", CASES)
def test_long_sequence_is_finite(name, overrides):
    cfg = dataclasses.replace(MIXERS[name], chunk_size=64 if "ttt" not in name else 16,
                              **overrides)
    mixer = cfg.build(D, rngs=nnx.Rngs(0))
    u = jax.random.normal(jax.random.PRNGKey(0), (1, T, D))

    @nnx.jit
    def loss_and_grad(m, u):
        def loss(m, u):
            y = m(u)[0]
            return jnp.mean(jnp.square(y)), y
        return nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(m, u)

    (loss, y), (g_m, g_u) = loss_and_grad(mixer, u)
    assert np.all(np.isfinite(np.asarray(y)))
    assert np.isfinite(float(loss))
    for g in jax.tree.leaves(g_m) + [g_u]:
        assert np.all(np.isfinite(np.asarray(g)))
