"""Known identities: classic recurrences are levels (design §4), each against a recurrence written
here.

linear memory + dot + GD (η = 1, no decay)      = causal linear attention  M_t = M + v kᵀ
linear memory + L2 + GD at C = 1                 = DeltaNet                 M(I − η k kᵀ) + η v kᵀ
linear memory + L2 + GD with retention at C = 1  = Titans-linear            M(α I − η k kᵀ) + η v kᵀ
linear memory + dot + gated DGD (any C)          = Gated DeltaNet           α M(I − η k kᵀ) + η v kᵀ
DGD with η → 0 and α = 1                         = the identity on the state
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax import core
from level_cases import assert_close, random_inputs

B, T, H, D = 2, 9, 2, 5


def _recurrence(step, m0, q, k, v, eta, alpha):
    """y_t = M_t q_t with M_t = step(M_{t−1}, k_t, v_t, η_t, α_t); inputs [B, T, H, ·],
    m0 [H, D, D]."""
    y = np.zeros(v.shape)
    m = np.broadcast_to(np.asarray(m0), (B,) + m0.shape).copy()
    for t in range(T):
        for b in range(B):
            for h in range(H):
                m[b, h] = step(m[b, h], k[b, t, h], v[b, t, h], eta[b, t, h], alpha[b, t, h])
                y[b, t, h] = m[b, h] @ q[b, t, h]
    return y, m


def _run(level, m0, x, **gates):
    y, state = core.chunked_scan(level, level.init_state((m0,), B), x["q"], x["k"], x["v"], **gates)
    return np.asarray(y), np.asarray(state.memory[0])


@pytest.fixture
def data(x64):
    x = random_inputs(11, B, T, H, D, D)
    m0 = 0.3 * jax.random.normal(jax.random.PRNGKey(4), (H, D, D), jnp.float64)
    return {n: np.asarray(a) for n, a in x.items()}, m0


@pytest.mark.fast
@pytest.mark.parametrize("chunk", [1, 4])
def test_linear_attention(data, chunk):
    x, m0 = data
    level = core.Level(core.matrix_memory(), core.dot_product(), core.gd(retention=False),
                       chunk_size=chunk)
    ones = np.ones(x["eta"].shape)
    got = _run(level, m0, x, eta=jnp.asarray(ones))
    want = _recurrence(lambda m, k, v, e, a: m + np.outer(v, k), m0, x["q"], x["k"], x["v"], ones,
                       ones)
    assert_close(got, want, 1e-12, "linear attention")


def test_delta_rule(data):
    x, m0 = data
    level = core.Level(core.matrix_memory(), core.l2(), core.gd(retention=False), chunk_size=1)
    got = _run(level, m0, x, eta=jnp.asarray(x["eta"]))
    step = lambda m, k, v, e, a: m @ (np.eye(D) - e * np.outer(k, k)) + e * np.outer(v, k)
    assert_close(got, _recurrence(step, m0, x["q"], x["k"], x["v"], x["eta"], x["alpha"]), 1e-12)


def test_titans_linear_with_retention(data):
    x, m0 = data
    level = core.Level(core.matrix_memory(), core.l2(), core.gd(), chunk_size=1)
    got = _run(level, m0, x, eta=jnp.asarray(x["eta"]), alpha=jnp.asarray(x["alpha"]))
    step = lambda m, k, v, e, a: m @ (a * np.eye(D) - e * np.outer(k, k)) + e * np.outer(v, k)
    assert_close(got, _recurrence(step, m0, x["q"], x["k"], x["v"], x["eta"], x["alpha"]), 1e-12)


@pytest.mark.fast
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_gated_delta_net_at_any_chunk_size(data, chunk):
    """The dot gradient does not depend on the state, so the chunked write is exact at any C."""
    x, m0 = data
    level = core.Level(core.matrix_memory(), core.dot_product(),
                       core.dgd(momentum=False, normalize=False, gated=True), chunk_size=chunk)
    got = _run(level, m0, x, eta=jnp.asarray(x["eta"]), alpha=jnp.asarray(x["alpha"]))
    step = lambda m, k, v, e, a: a * m @ (np.eye(D) - e * np.outer(k, k)) + e * np.outer(v, k)
    assert_close(got, _recurrence(step, m0, x["q"], x["k"], x["v"], x["eta"], x["alpha"]), 1e-12)


def test_dgd_with_vanishing_step_is_identity(data):
    """η → 0, α = 1: the memory never changes and reads are M_0 q (design §6.9, check 4)."""
    x, m0 = data
    level = core.Level(core.residual_mlp_memory(expansion=1), core.l2(), core.dgd(), chunk_size=4)
    params = level.memory.init(jax.random.PRNGKey(0), H, D, D, jnp.float64)
    tiny, ones = jnp.full(x["eta"].shape, 1e-14), jnp.ones(x["eta"].shape)
    y, state = core.chunked_scan(level, level.init_state(params, B), x["q"], x["k"], x["v"],
                                 eta=tiny, alpha=ones, beta=jnp.asarray(x["beta"]))
    assert_close(state.memory, level.init_state(params, B).memory, 1e-12, "state")
    frozen = core.multi_head_apply(level.memory, params, jnp.asarray(x["q"]))
    assert_close(y, frozen, 1e-12, "reads")
