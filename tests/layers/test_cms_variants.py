"""Nested CMS (design §5.4, Eq. 72, D24) against an explicit token loop, and ad-hoc level stacking
from MLP weights (design §5.5, D25)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax.core import cms as core_cms
from hope_jax.layers.cms import CMSConfig, CMSLevel, init_from_mlp, update_periods
from hope_jax.layers.mlp import SwiGLU

D, HID = 8, 16


def assert_close(got, want, tol=1e-5):
    """|got − want| ≤ tol · max|want| (fp32 sums in another order)."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()), np.abs(got - want).max()


def loop_level(theta0, w_tgt, eta, z, chunk, reset_every=None):
    """One in-context level by its definition, token by token: read at θ, sum the local
    gradients, write their mean at each chunk end (Eq. 71), and (nested) θ ← θ_0 after the write
    at every multiple of `reset_every` (D24). z [T, d] → (F(z) [T, d], θ after every token)."""
    grad = jax.grad(lambda p, x: 0.5 * jnp.sum(jnp.square(core_cms.swiglu(p, x) - x @ w_tgt)))
    theta, acc, ys, thetas = theta0, jax.tree.map(jnp.zeros_like, theta0), [], []
    for t in range(z.shape[0]):
        ys.append(core_cms.swiglu(theta, z[t]))
        acc = jax.tree.map(jnp.add, acc, grad(theta, z[t]))
        if (t + 1) % chunk == 0:
            theta = jax.tree.map(lambda p, g: p - eta * g / chunk, theta, acc)
            acc = jax.tree.map(jnp.zeros_like, acc)
        if reset_every is not None and (t + 1) % reset_every == 0:
            theta = theta0
        thetas.append(theta)
    return jnp.stack(ys), thetas


def _params(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    theta0 = core_cms.SwiGLUParams(0.25 * jax.random.normal(k1, (D, HID)),
                                   0.25 * jax.random.normal(k2, (D, HID)),
                                   0.25 * jax.random.normal(k3, (HID, D)))
    return theta0, 0.3 * jax.random.normal(k4, (D, D))


@pytest.mark.fast
def test_nested_reset_equals_token_loop_and_streams():
    """in_context_level with reset_every = R equals the token loop of Eq. 71 with resets at
    multiples of R (T = 13, C = 2, R = 6), also streamed in odd pieces; the state right after
    each slow boundary equals θ_0 (design §5.7, check 8)."""
    theta0, w_tgt = _params(jax.random.PRNGKey(0))
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 13, D))
    rho = jnp.asarray(0.3)
    eta = 0.1 * jax.nn.sigmoid(rho)
    y, _ = core_cms.in_context_level(theta0, w_tgt, rho, z, 2, 0.1, reset_every=6)
    for b in range(2):
        want, thetas = loop_level(theta0, w_tgt, eta, z[b], 2, 6)
        assert_close(y[b], want)
    no_reset, _ = core_cms.in_context_level(theta0, w_tgt, rho, z, 2, 0.1)
    assert np.abs(no_reset[:, 6:] - y[:, 6:]).max() > 1e-4, "the reset must matter"
    outs, state = [], core_cms.init_in_context_state(theta0, 2)
    for a, b in ((0, 5), (5, 6), (6, 7), (7, 13)):  # a piece ending on a boundary, single tokens
        out, state = core_cms.in_context_level(theta0, w_tgt, rho, z[:, a:b], 2, 0.1, state, 6)
        outs.append(out)
        if b % 6 == 0:
            for p, p0 in zip(state.theta, theta0):
                np.testing.assert_array_equal(p, jnp.broadcast_to(p0, p.shape))
    assert_close(jnp.concatenate(outs, 1), y)
    with pytest.raises(ValueError, match="multiple of chunk"):
        core_cms.in_context_level(theta0, w_tgt, rho, z, 4, 0.1, reset_every=6)


@pytest.mark.parametrize("level_norm", [False, True])
def test_nested_cms_chain_and_periods(level_norm):
    """CMS(variant="nested") = the sequential chain whose faster in-context level resets at the
    slower level's chunk boundaries; θ_0 below an outer level gets that level's period. With
    level_norm, levels 2.. read RMSNorm_ℓ(z_{ℓ−1}) (D20's per-level pre-norm)."""
    cfg = CMSConfig(levels=(CMSLevel(chunk=2), CMSLevel(chunk=6), CMSLevel(period=4)),
                    variant="nested", hidden=HID, level_norm=level_norm)
    cms = cfg.build(D, rngs=nnx.Rngs(0))
    if level_norm:  # non-trivial gains
        for i, norm in enumerate(cms.norms):
            norm.scale[...] = 1.0 + 0.5 * jax.random.normal(jax.random.PRNGKey(7 + i), (D,))
    for lvl in cms.levels[:2]:  # non-trivial targets and steps
        lvl.w_target[...] = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (D, D))
        lvl.rho[...] = jnp.asarray(1.0)
    z0 = jax.random.normal(jax.random.PRNGKey(2), (1, 13, D))
    got, _ = cms(z0)
    z = z0[0]
    for i, (lvl, reset) in enumerate(zip(cms.levels, (6, None, None))):
        x = z
        if level_norm and i > 0:
            rms = jnp.sqrt(jnp.mean(z * z, -1, keepdims=True) + 1e-6)
            x = z / rms * cms.norms[i - 1].scale[...]
        if i < 2:
            f, _ = loop_level(lvl.theta0(), lvl.w_target[...], 0.1 * jax.nn.sigmoid(lvl.rho[...]),
                              x, lvl.chunk, reset)
        else:
            f = lvl(x[None])[0][0]
        z = z + f
    assert_close(got[0], z - z0[0])
    flat = {tuple(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(update_periods(cms))[0]}
    periods = lambda *prefix: {v for k, v in flat.items() if k[:len(prefix)] == prefix}
    assert periods("levels", "0") == {1}  # θ_0 below an in-context level: every step
    assert periods("levels", "1", "mlp") == {4}  # θ_0 below the outer level of period 4
    assert periods("levels", "1", "w_target") == periods("levels", "1", "rho") == {1}
    assert periods("levels", "2") == {4}
    with pytest.raises(ValueError, match="multiple"):
        CMSConfig(levels=(CMSLevel(chunk=4), CMSLevel(chunk=6)), variant="nested")
    with pytest.raises(ValueError, match="level_norm"):
        CMSConfig(variant="independent", level_norm=True)


@pytest.mark.parametrize("variant", ["independent", "sequential"])
def test_cms_initialised_from_an_mlp_equals_it(variant):
    """One level initialised from a SwiGLU is that SwiGLU; K = 3 levels (outer and in-context)
    initialised from it equal it before any in-context write (D25: copies with w = 1/K, or one
    copy and zeroed W_down)."""
    mlp = SwiGLU(D, HID, rngs=nnx.Rngs(5))
    z = jax.random.normal(jax.random.PRNGKey(4), (2, 7, D))
    want = mlp(z)[0]
    one = CMSConfig(levels=(CMSLevel(period=1),), variant=variant, hidden=HID).build(
        D, rngs=nnx.Rngs(0))
    init_from_mlp(one, mlp)
    np.testing.assert_allclose(one(z)[0], want, atol=1e-6, rtol=1e-6)
    three = CMSConfig(levels=(CMSLevel(chunk=8), CMSLevel(period=2), CMSLevel(period=8)),
                      variant=variant, hidden=HID).build(D, rngs=nnx.Rngs(1))
    init_from_mlp(three, mlp)
    np.testing.assert_allclose(three(z)[0], want, atol=1e-5, rtol=1e-5)  # T < C: no write yet
    with pytest.raises(ValueError, match="width"):
        init_from_mlp(three, SwiGLU(D, 2 * HID, rngs=nnx.Rngs(6)))
