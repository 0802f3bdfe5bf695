"""Inner optimizers: one-token updates against the formulas of design §2.1–2.3, chains, specs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax import core
from hope_jax.core import inner_optimizers as io
from level_cases import assert_close

D_IN, D_OUT = 4, 3


def _one_token(seed=0):
    r = np.random.default_rng(seed)
    w = jnp.asarray(r.normal(size=(D_OUT, D_IN)))
    k = jnp.asarray(r.normal(size=D_IN))
    g = jnp.asarray(r.normal(size=(D_OUT, D_IN)))
    return w, k, g


@pytest.mark.fast
def test_gd_with_retention_formula(x64):
    """M_t = α M − η g (design §2.1); η = 0, α = 1 is the identity."""
    w, k, g = _one_token()
    opt = core.gd()
    u, _ = opt.update((g,), opt.init((w,)), (w,), eta=0.3, alpha=0.9, key=k)
    assert_close(w + u[0], 0.9 * w - 0.3 * g, 1e-14)
    u, _ = opt.update((g,), opt.init((w,)), (w,), eta=0.0, alpha=1.0, key=k)
    assert_close(w + u[0], w, 1e-15)


@pytest.mark.fast
def test_momentum_formula_and_beta_zero_is_gd(x64):
    """S = β S − η g, M = α M + S over two tokens; β = 0 equals GD with retention (design §2.2)."""
    w, k, g = _one_token()
    opt = core.momentum_gd()
    state = opt.init((w,))
    u, state = opt.update((g,), state, (w,), eta=0.3, alpha=0.9, beta=0.5, key=k)
    w1 = w + u[0]
    u, state = opt.update((2 * g,), state, (w1,), eta=0.2, alpha=0.8, beta=0.5, key=k)
    s1 = -0.3 * g
    s2 = 0.5 * s1 - 0.2 * 2 * g
    assert_close(w1 + u[0], 0.8 * (0.9 * w + s1) + s2, 1e-14)
    u0, _ = opt.update((g,), opt.init((w,)), (w,), eta=0.3, alpha=0.9, beta=0.0, key=k)
    gd = core.gd()
    ug, _ = gd.update((g,), gd.init((w,)), (w,), eta=0.3, alpha=0.9, key=k)
    assert_close(u0, ug, 1e-15)


@pytest.mark.fast
def test_dgd_is_the_exact_proximal_l2_step(x64):
    """DGD = argmin_W ½‖W x − u‖² + ‖W − W_t‖²/(2η), solved densely (design §2.3, test a)."""
    w, x, _ = _one_token(1)
    u_target = jnp.asarray(np.random.default_rng(2).normal(size=D_OUT))
    eta = 0.7
    # Dot objective: the gradient at the target is −u xᵀ; DGD without momentum or retention.
    opt = core.dgd(momentum=False, retention=False, normalize=True)
    grad = -jnp.outer(u_target, x)
    upd, _ = opt.update((grad,), opt.init((w,)), (w,), eta=eta, key=x)
    # Normal equations: W (x xᵀ + I/η) = W_t/η + u xᵀ.
    lhs = jnp.outer(x, x) + jnp.eye(D_IN) / eta
    rhs = w / eta + jnp.outer(u_target, x)
    argmin = jnp.linalg.solve(lhs.T, rhs.T).T
    assert_close(w + upd[0], argmin, 1e-12)


@pytest.mark.fast
def test_dgd_limits(x64):
    """η → 0 leaves the state unchanged; η → ∞ interpolates, W x = u (design §2.3, tests b, c)."""
    w, x, _ = _one_token(3)
    u_target = jnp.asarray(np.random.default_rng(4).normal(size=D_OUT))
    opt = core.dgd(momentum=False, retention=False, normalize=True)
    grad = -jnp.outer(u_target, x)
    small, _ = opt.update((grad,), opt.init((w,)), (w,), eta=1e-12, key=x)
    assert_close(w + small[0], w, 1e-10)
    big, _ = opt.update((grad,), opt.init((w,)), (w,), eta=1e12, key=x)
    assert_close((w + big[0]) @ x, u_target, 1e-9)
    x_unit = x / jnp.linalg.norm(x)
    assert_close(io.normalized_step_size(jnp.asarray(0.4), x_unit), 0.4 / 1.4, 1e-15)


@pytest.mark.fast
def test_dgd_on_mlp_touches_input_layer_only(x64):
    """With g = 0: W₂ ← W₂(α I − η' k kᵀ), W₁ ← α W₁ (design §2.3, test e; D3)."""
    memory = core.residual_mlp_memory(expansion=2)
    w2, w1 = (p[0] for p in memory.init(jax.random.PRNGKey(0), 1, D_IN, D_IN, jnp.float64))
    k = jnp.asarray(np.random.default_rng(5).normal(size=D_IN))
    opt = core.dgd(momentum=False)
    zeros = (jnp.zeros_like(w2), jnp.zeros_like(w1))
    (u2, u1), _ = opt.update(zeros, opt.init((w2, w1)), (w2, w1), eta=0.5, alpha=0.9, key=k)
    eta_n = 0.5 / (1 + 0.5 * k @ k)
    assert_close(w2 + u2, w2 @ (0.9 * jnp.eye(D_IN) - eta_n * jnp.outer(k, k)), 1e-14)
    assert_close(w1 + u1, 0.9 * w1, 1e-15)


@pytest.mark.fast
def test_chaining_blocks_equals_constructors(x64):
    """chain(step, momentum, retention, DGD) is `dgd()`, with the same canonical recurrence."""
    w, k, g = _one_token(6)
    built = core.chain(core.scale_by_step_size(normalize=True), core.trace_momentum(),
                       core.add_retention(), core.add_dgd_preconditioner())
    ref = core.dgd()
    hyper = dict(eta=0.4, alpha=0.95, beta=0.7, key=k)
    a, _ = built.update((g,), built.init((w,)), (w,), **hyper)
    b, _ = ref.update((g,), ref.init((w,)), (w,), **hyper)
    assert_close(a, b, 1e-15)
    assert io.recurrence_spec(built) == io.recurrence_spec(ref)


@pytest.mark.fast
def test_recurrence_specs():
    """Canonical chains describe their recurrence; a non-canonical order has none (generic path)."""
    spec = io.recurrence_spec(core.dgd())
    assert spec.momentum_slot == 1 and spec.retention and spec.dgd and spec.normalize_step
    assert io.recurrence_spec(core.gd(retention=False)).momentum_slot is None
    odd = core.chain(core.scale_by_step_size(), core.add_retention(), core.trace_momentum())
    assert io.recurrence_spec(odd) is None
    level = core.Level(core.matrix_memory(), core.l2(), odd)
    assert level.path == "generic"
    with pytest.raises(ValueError, match="canonical"):
        core.Level(core.matrix_memory(), core.l2(), odd, method="closed_form")
