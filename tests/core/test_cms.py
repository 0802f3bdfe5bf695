"""In-context CMS levels (spec §5.7): chunk-end writes, frozen levels, reset per sequence, gradients."""
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


def _loop(p, w_tgt, rho, z, chunk, eta_max):
    """Eq. 71 as loops: reads at θ_j, write the mean of the chunk's per-token gradients at its end."""
    eta = eta_max * jax.nn.sigmoid(rho)
    loss = lambda th, zt: 0.5 * jnp.sum((swiglu(th, zt) - zt @ w_tgt) ** 2)  # noqa: E731
    outs = []
    for b in range(z.shape[0]):
        theta, ys = p, []
        for start in range(0, z.shape[1], chunk):
            idx = range(start, min(start + chunk, z.shape[1]))
            ys += [swiglu(theta, z[b, t]) for t in idx]
            if len(idx) == chunk:  # a chunk ending in the padding does not write (D35)
                grads = [jax.grad(loss)(theta, z[b, t]) for t in idx]
                theta = jax.tree.map(lambda th, *g: th - eta * sum(g) / chunk, theta, *grads)
        outs.append(jnp.stack(ys))
    return jnp.stack(outs)


@pytest.mark.parametrize("chunk", [1, 4])
def test_equals_chunk_end_loop(x64, chunk):
    p, w_tgt, rho, z = _setup()
    y, _ = in_context_level(p, w_tgt, rho, z, chunk, eta_max=0.5)
    assert_close(y, _loop(p, w_tgt, rho, z, chunk, 0.5), 1e-12)


@pytest.mark.fast
def test_frozen_level_is_a_plain_mlp(x64):
    """η_max = 0 (or C ≥ T) never writes inside the sequence: every token reads θ_0 (spec §5.7.2–3)."""
    p, w_tgt, rho, z = _setup()
    plain = swiglu(p, z)
    assert_close(in_context_level(p, w_tgt, rho, z, 4, eta_max=0.0)[0], plain, 1e-15)
    assert_close(in_context_level(p, w_tgt, rho, z, z.shape[1], eta_max=0.5)[0], plain, 1e-15)


@pytest.mark.fast
def test_sequences_never_share_state(x64):
    """Two sequences in one batch give the same result as each alone (reset per sequence, §5.7.5)."""
    p, w_tgt, rho, z = _setup()
    both = in_context_level(p, w_tgt, rho, z, 3, eta_max=0.5)[0]
    for b in range(2):
        alone = in_context_level(p, w_tgt, rho, z[b:b + 1], 3, eta_max=0.5)[0]
        assert_close(alone[0], both[b], 1e-14)


def test_meta_gradients_match_finite_differences(x64):
    """Gradients reach θ_0, W_tgt and ρ through the writes, and equal central differences."""
    p, w_tgt, rho, z = _setup(t=9)
    f = lambda args: jnp.sum(jnp.sin(in_context_level(args[0], args[1], args[2], z, 3, 0.5)[0]))  # noqa: E731
    args = (p, w_tgt, rho)
    grads = jax.grad(f)(args)
    rng = np.random.default_rng(0)
    for i in range(3):
        direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), args[i])
        shift = lambda s: tuple(jax.tree.map(lambda a, u: a + s * u, args[j], direction) if j == i  # noqa: E731
                                else args[j] for j in range(3))
        numeric = (f(shift(1e-6)) - f(shift(-1e-6))) / 2e-6
        analytic = sum(jnp.sum(g * u) for g, u in zip(jax.tree.leaves(grads[i]), jax.tree.leaves(direction)))
        assert abs(float(numeric - analytic)) <= 1e-6 * max(1.0, abs(float(numeric)))
        assert float(jnp.max(jnp.abs(jnp.asarray(jax.tree.leaves(grads[i])[0])))) > 0


@pytest.mark.fast
def test_bad_inputs_raise(x64):
    p, w_tgt, rho, z = _setup()
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        in_context_level(p, w_tgt, rho, z, 0)
    with pytest.raises(ValueError, match="z must have shape"):
        in_context_level(p, w_tgt, rho, z[..., :3], 2)


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
