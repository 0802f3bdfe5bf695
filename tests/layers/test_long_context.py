"""No NaN/Inf in forward + backward of each memory layer at T = 16384 (random inputs, default gates)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixer_cases import MEMORY_MIXERS, MIXERS

D, T = 16, 16384

DIVERGES = ("Titans with a residual-MLP memory diverges at the D19 gate biases (eta = 0.12, "
            "beta = sigmoid(2) = 0.88): an independent token loop with jax.grad diverges too, "
            "within ~40 tokens of random data, and at chunk 64 snapshot gradients diverge even at "
            "eta = 0.018 (chunked and generic paths agree); reported to the lead")
CASES = [pytest.param(n, {}, marks=pytest.mark.xfail(strict=True, reason=DIVERGES))
         if n == "titans_lmm" else pytest.param(n, {}) for n in MEMORY_MIXERS]


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
