"""In-context CMS levels (design §5.7): chunk-end writes, frozen levels, reset per sequence,
gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.core.cms import SwiGLUParams, in_context_level, swiglu
from level_cases import assert_close

D, HID = 4, 6


def _setup(seed=0, b=2, t=11):
    ks = jax.random.split(jax.random.PRNGKey(seed), 5)
    p = SwiGLUParams(*(0.5 * jax.random.normal(k, s, jnp.float64)
                       for k, s in zip(ks[:3], [(D, HID), (D, HID), (HID, D)])))
    w_tgt = 0.3 * jax.random.normal(ks[3], (D, D), jnp.float64)
    z = jax.random.normal(ks[4], (b, t, D), jnp.float64)
    return p, w_tgt, jnp.asarray(0.7, jnp.float64), z


def _loop(p, w_tgt, rho, z, chunk, eta_max, retention=1.0):
    """Eq. 71 as loops: reads at θ_j, write the mean of the chunk's per-token gradients at its end
    (with retention r: θ ← θ_0 + r(θ − θ_0) − η ḡ)."""
    eta = eta_max * jax.nn.sigmoid(rho)
    loss = lambda th, zt: 0.5 * jnp.sum((swiglu(th, zt) - zt @ w_tgt) ** 2)
    outs = []
    for b in range(z.shape[0]):
        theta, ys = p, []
        for start in range(0, z.shape[1], chunk):
            idx = range(start, min(start + chunk, z.shape[1]))
            ys += [swiglu(theta, z[b, t]) for t in idx]
            if len(idx) == chunk:  # a chunk ending in the padding does not write (D35)
                grads = [jax.grad(loss)(theta, z[b, t]) for t in idx]
                theta = jax.tree.map(lambda th, th0, *g: th0 + retention * (th - th0)
                                     - eta * sum(g) / chunk, theta, p, *grads)
        outs.append(jnp.stack(ys))
    return jnp.stack(outs)


@pytest.mark.parametrize("chunk, retention", [(1, 1.0), (4, 1.0), (3, 0.8)])
def test_equals_chunk_end_loop(x64, chunk, retention):
    p, w_tgt, rho, z = _setup()
    y, _ = in_context_level(p, w_tgt, rho, z, chunk, eta_max=0.5, retention=retention)
    assert_close(y, _loop(p, w_tgt, rho, z, chunk, 0.5, retention), 1e-12)


@pytest.mark.fast
def test_frozen_level_is_a_plain_mlp(x64):
    """η_max = 0 (or C ≥ T) never writes inside the sequence: every token reads θ_0 (design §5.7,
    checks 2–3)."""
    p, w_tgt, rho, z = _setup()
    plain = swiglu(p, z)
    assert_close(in_context_level(p, w_tgt, rho, z, 4, eta_max=0.0)[0], plain, 1e-15)
    assert_close(in_context_level(p, w_tgt, rho, z, z.shape[1], eta_max=0.5)[0], plain, 1e-15)


@pytest.mark.fast
def test_sequences_never_share_state(x64):
    """Two sequences in one batch give the same result as each alone (reset per sequence, design
    §5.7, check 5)."""
    p, w_tgt, rho, z = _setup()
    both = in_context_level(p, w_tgt, rho, z, 3, eta_max=0.5)[0]
    for b in range(2):
        alone = in_context_level(p, w_tgt, rho, z[b:b + 1], 3, eta_max=0.5)[0]
        assert_close(alone[0], both[b], 1e-14)


def test_meta_gradients_match_finite_differences(x64):
    """Gradients reach θ_0, W_tgt and ρ through the writes, and equal central differences; the
    backward stores θ once per 2 chunks (5 chunks: 2 groups and a tail)."""
    p, w_tgt, rho, z = _setup(t=13)
    f = lambda args: jnp.sum(jnp.sin(in_context_level(args[0], args[1], args[2], z, 3, 0.5,
                                                      scan_group=2)[0]))
    args = (p, w_tgt, rho)
    grads = jax.grad(f)(args)
    rng = np.random.default_rng(0)
    for i in range(3):
        direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), args[i])
        shift = lambda s: tuple(jax.tree.map(lambda a, u: a + s * u, args[j], direction) if j == i
                                else args[j] for j in range(3))
        numeric = (f(shift(1e-6)) - f(shift(-1e-6))) / 2e-6
        analytic = sum(jnp.sum(g * u)
                       for g, u in zip(jax.tree.leaves(grads[i]), jax.tree.leaves(direction)))
        assert abs(float(numeric - analytic)) <= 1e-6 * max(1.0, abs(float(numeric)))
        assert float(jnp.max(jnp.abs(jnp.asarray(jax.tree.leaves(grads[i])[0])))) > 0


@pytest.mark.fast
def test_bad_inputs_raise(x64):
    p, w_tgt, rho, z = _setup()
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        in_context_level(p, w_tgt, rho, z, 0)
    with pytest.raises(ValueError, match="z must have shape"):
        in_context_level(p, w_tgt, rho, z[..., :3], 2)
    with pytest.raises(ValueError, match="scan_group must be a positive int"):
        in_context_level(p, w_tgt, rho, z, 2, scan_group=0)


@pytest.mark.fast
def test_streaming_mid_chunk_equals_one_call(x64):
    """Calls split anywhere, with the state carried (θ_j and the partial chunk's gradient sum),
    equal one call; so do single-token steps after a prefill."""
    p, w_tgt, rho, z = _setup(t=10)
    y, s = in_context_level(p, w_tgt, rho, z, 4, eta_max=0.5)
    y1, s1 = in_context_level(p, w_tgt, rho, z[:, :6], 4, eta_max=0.5)
    y2, s2 = in_context_level(p, w_tgt, rho, z[:, 6:], 4, eta_max=0.5, state=s1)
    assert_close(jnp.concatenate([y1, y2], 1), y, 1e-12)
    assert_close((s2.theta, s2.grad_sum), (s.theta, s.grad_sum), 1e-12)
    ys, st = [], in_context_level(p, w_tgt, rho, z[:, :3], 4, eta_max=0.5)[1]
    for t in range(3, 10):
        yt, st = in_context_level(p, w_tgt, rho, z[:, t:t + 1], 4, eta_max=0.5, state=st)
        ys.append(yt)
    assert_close(jnp.concatenate(ys, 1), y[:, 3:], 1e-12)


def _scaled_loop(p, w_tgt, rho, z, chunk, eta_max, scale):
    """A chunk-mean write as loops: token t's autodiff gradient g_t, rescaled by
    `scale(theta, z_t, g_t, eta)` → its contribution, summed over the chunk, then θ − η Σ / C."""
    eta = eta_max * jax.nn.sigmoid(rho)
    loss = lambda th, zt: 0.5 * jnp.sum((swiglu(th, zt) - zt @ w_tgt) ** 2)
    outs = []
    for b in range(z.shape[0]):
        theta, ys = p, []
        for start in range(0, z.shape[1], chunk):
            idx = range(start, min(start + chunk, z.shape[1]))
            ys += [swiglu(theta, z[b, t]) for t in idx]
            if len(idx) == chunk:
                total = jax.tree.map(jnp.zeros_like, theta)
                for t in idx:
                    part = scale(theta, z[b, t], jax.grad(loss)(theta, z[b, t]), eta)
                    total = jax.tree.map(jnp.add, total, part)
                theta = jax.tree.map(lambda th, g: th - eta * g / chunk, theta, total)
        outs.append(jnp.stack(ys))
    return jnp.stack(outs)


def _normalized_loop(p, w_tgt, rho, z, chunk, eta_max):
    """The normalised write: every layer's per-token gradient divided by
    1 + η‖(that layer's input)‖², then the chunk mean."""
    def scale(theta, zt, g, eta):
        hid = jax.nn.silu(zt @ theta.w_gate) * (zt @ theta.w_up)
        s_in, s_hid = 1 / (1 + eta * zt @ zt), 1 / (1 + eta * hid @ hid)
        return SwiGLUParams(s_in * g.w_gate, s_in * g.w_up, s_hid * g.w_down)
    return _scaled_loop(p, w_tgt, rho, z, chunk, eta_max, scale)

@pytest.mark.parametrize("chunk", [1, 3])
def test_normalized_step_equals_loop_and_streams(x64, chunk):
    p, w_tgt, rho, z = _setup(seed=3, t=10)
    y, _ = in_context_level(p, w_tgt, rho, z, chunk, eta_max=0.5, normalize=True)
    assert_close(y, _normalized_loop(p, w_tgt, rho, z, chunk, 0.5), 1e-10)
    state, parts = None, []
    for a, b in ((0, 4), (4, 5), (5, 10)):
        out, state = in_context_level(p, w_tgt, rho, z[:, a:b], chunk, eta_max=0.5, state=state,
                                      normalize=True)
        parts.append(out)
    assert_close(jnp.concatenate(parts, 1), y, 1e-10)
    g = jax.grad(lambda w: in_context_level(p, w, rho, z, chunk, 0.5, normalize=True)[0].sum())
    assert np.isfinite(np.asarray(g(w_tgt))).all()


def test_normalized_step_stays_bounded_where_plain_gd_diverges():
    """An RMS-normalised stream (‖z‖² = d = 64) at D22's η_max = 0.1: plain GD blows up within a
    few chunks, the normalised step stays bounded (docs/hope.md)."""
    d, hid = 64, 64
    ks = jax.random.split(jax.random.PRNGKey(0), 4)
    p = SwiGLUParams(jax.random.normal(ks[0], (d, hid)) / d ** 0.5,
                     jax.random.normal(ks[1], (d, hid)) / d ** 0.5,
                     jax.random.normal(ks[2], (hid, d)) / hid ** 0.5)
    z = jax.random.normal(ks[3], (2, 256, d))
    z = z / jnp.sqrt(jnp.mean(z * z, -1, keepdims=True))
    rho = jnp.asarray(5.0)   # η ≈ η_max
    plain, _ = in_context_level(p, jnp.zeros((d, d)), rho, z, 8, eta_max=0.1)
    normed, _ = in_context_level(p, jnp.zeros((d, d)), rho, z, 8, eta_max=0.1, normalize=True)
    assert not np.isfinite(np.asarray(plain)).all() or float(jnp.abs(plain).max()) > 1e6
    assert np.isfinite(np.asarray(normed)).all() and float(jnp.abs(normed).max()) < 100


def _curvature_loop(p, w_tgt, rho, z, chunk, eta_max):
    """The curvature write, by autodiff: token t's Gauss–Newton curvature ρ_t = ‖J_t g_t‖²/‖g_t‖²
    from a JVP of F_θ(z_t) along g_t, and the chunk mean of g_t/(1 + ηρ_t)."""
    sq = lambda tree: sum(jnp.sum(x * x) for x in jax.tree.leaves(tree))

    def scale(theta, zt, g, eta):
        _, jg = jax.jvp(lambda th: swiglu(th, zt), (theta,), (g,))
        return jax.tree.map(lambda x: x / (1 + eta * sq(jg) / sq(g)), g)
    return _scaled_loop(p, w_tgt, rho, z, chunk, eta_max, scale)

@pytest.mark.parametrize("chunk", [1, 3])
def test_curvature_step_equals_autodiff_loop_and_streams(x64, chunk):
    p, w_tgt, rho, z = _setup(seed=5, t=10)
    y, _ = in_context_level(p, w_tgt, rho, z, chunk, eta_max=0.5, normalize="curvature")
    assert_close(y, _curvature_loop(p, w_tgt, rho, z, chunk, 0.5), 1e-10)
    state, parts = None, []
    for a, b in ((0, 4), (4, 5), (5, 10)):
        out, state = in_context_level(p, w_tgt, rho, z[:, a:b], chunk, eta_max=0.5, state=state,
                                      normalize="curvature")
        parts.append(out)
    assert_close(jnp.concatenate(parts, 1), y, 1e-10)
    f = lambda w: in_context_level(p, w, rho, z, chunk, 0.5, normalize="curvature")[0].sum()
    direction = jax.random.normal(jax.random.PRNGKey(9), w_tgt.shape, jnp.float64)
    eps = 1e-6
    fd = (f(w_tgt + eps * direction) - f(w_tgt - eps * direction)) / (2 * eps)
    assert_close(jnp.sum(jax.grad(f)(w_tgt) * direction), fd, 1e-6)


def test_curvature_step_stays_bounded_where_the_per_layer_step_diverges():
    """A grown W_down (×8, as MQAR training produced) makes the per-layer rule expansive: it sees
    only each layer's input. The curvature step sees the whole Jacobian and stays bounded."""
    d, hid = 32, 32
    ks = jax.random.split(jax.random.PRNGKey(1), 4)
    p = SwiGLUParams(jax.random.normal(ks[0], (d, hid)) / d ** 0.5,
                     jax.random.normal(ks[1], (d, hid)) / d ** 0.5,
                     8 * jax.random.normal(ks[2], (hid, d)) / hid ** 0.5)
    z = jax.random.normal(ks[3], (2, 256, d))
    z = z / jnp.sqrt(jnp.mean(z * z, -1, keepdims=True))
    rho = jnp.asarray(5.0)
    layer, _ = in_context_level(p, jnp.zeros((d, d)), rho, z, 8, eta_max=0.1, normalize=True)
    curv, _ = in_context_level(p, jnp.zeros((d, d)), rho, z, 8, eta_max=0.1,
                               normalize="curvature")
    assert not np.isfinite(np.asarray(layer)).all() or float(jnp.abs(layer).max()) > 1e6
    assert np.isfinite(np.asarray(curv)).all() and float(jnp.abs(curv).max()) < 1e3
