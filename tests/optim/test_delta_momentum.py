"""Tests of hope_jax/optim/delta_momentum.py (design §2.5, Eqs. 48–49; D27)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import SHAPES, assert_trees_close, run


@pytest.mark.fast
def test_flat_form_matches_numpy(x64):
    """Flat form: s ← βs − γ⟨s, ĝ⟩ĝ + g per flattened tensor equals the numpy recurrence over 5
    steps."""
    grads = ref.gradient_stream(10, SHAPES)
    outs, _ = run(ho.scale_by_delta_momentum(beta=0.9, gamma=0.7), grads)
    assert_trees_close(outs, ref.delta_momentum(grads, 0.9, 0.7))


def test_matrix_form_matches_numpy(x64):
    """Matrix form: s (βI − γĜᵀĜ) + g on matrices (flat on vectors) equals numpy over 5 steps."""
    grads = ref.gradient_stream(11, SHAPES)
    outs, _ = run(ho.scale_by_delta_momentum(beta=0.9, gamma=1.0, form="matrix"), grads)
    assert_trees_close(outs, ref.delta_momentum(grads, 0.9, 1.0, matrix=True))


@pytest.mark.parametrize("form", ["flat", "matrix"])
@pytest.mark.parametrize("preconditioner", [None, "diagonal"])
def test_gamma_zero_is_preconditioned_momentum(x64, form, preconditioner):
    """γ = 0: delta momentum equals preconditioned momentum with the same P (design §2.5 test)."""
    grads = ref.gradient_stream(12, SHAPES)
    ours, _ = run(ho.scale_by_delta_momentum(0.9, 0.0, preconditioner=preconditioner, form=form),
                  grads)
    theirs, _ = run(ho.scale_by_preconditioned_momentum(0.9, preconditioner=preconditioner), grads)
    assert_trees_close(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("gamma", [1.0, 0.4])
def test_one_step_component_scaling(x64, gamma):
    """One step scales m's component along ĝ by β − γ‖ĝ‖² (≈ β − γ) and its orthogonal part by β
    (design §2.5)."""
    rng = np.random.default_rng(13)
    beta, eps = 0.9, 1e-8
    s0, g = rng.standard_normal(12), rng.standard_normal(12)
    g_hat = g / (np.linalg.norm(g) + eps)
    decayed = np.asarray(ho.delta_decay_flat(jnp.asarray(s0), jnp.asarray(g), beta, gamma, eps))
    unit = g / np.linalg.norm(g)
    along0, along1 = s0 @ unit, decayed @ unit
    np.testing.assert_allclose(along1, (beta - gamma * g_hat @ g_hat) * along0, rtol=1e-12)
    np.testing.assert_allclose(along1, (beta - gamma) * along0, rtol=1e-6)
    np.testing.assert_allclose(decayed - along1 * unit, beta * (s0 - along0 * unit), atol=1e-12)
    # Through the transform, the new gradient is then added: s1 = decay(s0) + g.
    tx = ho.scale_by_delta_momentum(beta, gamma, eps)
    state = ho.DeltaMomentumState(momentum=jnp.asarray(s0), preconditioner=optax.EmptyState())
    s1, _ = tx.update(jnp.asarray(g), state)
    np.testing.assert_allclose(np.asarray(s1), decayed + g, atol=1e-12)


# The toy problem of NL Fig. 4 (design §2.5): ψ(r, θ) = r² + k (r − θ + α sin(ω r))²,
# minimiser (0, 0), a curved valley along θ = r + α sin(ω r). Constants (the paper gives none):
# k = 5, α = 1, ω = 1; start (−3.5, 2); β = 0.95, η = 0.02 for both optimizers; "neighbourhood"
# = ‖(r, θ)‖ < 0.1.
TOY_K, TOY_ALPHA, TOY_OMEGA = 5.0, 1.0, 1.0


def _toy_loss(x):
    r, theta = x[0], x[1]
    return r**2 + TOY_K * (r - theta + TOY_ALPHA * jnp.sin(TOY_OMEGA * r)) ** 2


def _steps_to_neighbourhood(tx, max_steps=400, radius=0.1):
    x = jnp.array([-3.5, 2.0])
    state = tx.init(x)

    def step(carry, _):
        x, state = carry
        u, state = tx.update(jax.grad(_toy_loss)(x), state, x)
        x = optax.apply_updates(x, u)
        return (x, state), jnp.linalg.norm(x)

    _, norms = jax.lax.scan(step, (x, state), None, length=max_steps)
    inside = np.asarray(norms) < radius
    return int(np.argmax(inside)) + 1 if inside.any() else None


@pytest.mark.parametrize("learning_rate", [0.015, 0.02, 0.025])
def test_toy_valley_delta_momentum_is_faster(x64, learning_rate):
    """On ψ(r, θ) = r² + 5(r − θ + sin r)² from (−3.5, 2), delta momentum (γ = 1) enters ‖x‖ < 0.1
    in fewer steps than plain momentum with the same β = 0.95 and step size (NL Fig. 4)."""
    delta = _steps_to_neighbourhood(ho.delta_momentum(learning_rate, beta=0.95, gamma=1.0))
    plain = _steps_to_neighbourhood(ho.preconditioned_momentum(learning_rate, beta=0.95))
    assert delta is not None and plain is not None
    assert delta < plain, (delta, plain)
