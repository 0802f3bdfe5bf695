"""Every mixer type: shapes and dtypes, causality, and prefill + single-token steps == one call."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mixer_cases import D, MIXERS

B, T, T0 = 2, 11, 6  # T not a multiple of the chunk size (4); prefill T0 tokens, then steps


def _build(name, dtype=jnp.float32):
    return MIXERS[name].build(D, rngs=nnx.Rngs(0), dtype=dtype)


@nnx.jit
def _full(mixer, u):
    return mixer(u)[0]


@nnx.jit(static_argnums=(2,))
def _prefill(mixer, u, max_len):
    return mixer(u, mixer.init_state(u.shape[0], max_len))


@nnx.jit
def _step(mixer, u, state):
    return mixer(u, state)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_mixer_shapes_causality_and_streaming(name):
    mixer = _build(name)
    u = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    # causality: perturbing position t changes no output before t
    t = 7
    u2 = u.at[:, t].add(jax.random.normal(jax.random.PRNGKey(2), (B, D)))
    y_all = _full(mixer, jnp.concatenate([u, u2]))
    y, y2 = np.asarray(y_all[:B]), np.asarray(y_all[B:])
    assert y.shape == (B, T, D) and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[:, :t], y2[:, :t])
    assert np.abs(y[:, t:] - y2[:, t:]).max() > 1e-6, "the perturbation must reach later outputs"
    # prefill T0 tokens, then one token at a time
    y_pre, state = _prefill(mixer, u[:, :T0], T)
    outs = [y_pre]
    for i in range(T0, T):
        y_i, state = _step(mixer, u[:, i:i + 1], state)
        outs.append(y_i)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), y, atol=1e-5, rtol=1e-5)


@pytest.mark.fast
def test_memory_state_stays_float32_under_bf16_compute():
    """D30: a bf16 mixer returns bf16 activations while its memory state is float32."""
    mixer = _build("titans_lmm", jnp.bfloat16)
    u = jax.random.normal(jax.random.PRNGKey(1), (B, 5, D), jnp.bfloat16)
    y, state = mixer(u, mixer.init_state(B))
    assert y.dtype == jnp.bfloat16 and y.shape == (B, 5, D)
    assert all(w.dtype == jnp.float32 for w in jax.tree.leaves(state.level.memory))
    assert all(w.dtype == jnp.float32 for w in jax.tree.leaves(state.level.opt_state))
    assert np.all(np.isfinite(np.asarray(y, np.float32)))


@pytest.mark.fast
def test_eta_is_bounded_by_eta_max():
    """η = η_max σ(·) lies in (0, η_max) whatever the input scale (D7)."""
    cfg = MIXERS["titans_lmm"]
    mixer = dataclasses.replace(cfg, eta_max=0.3, gate_init_std=1.0).build(D, rngs=nnx.Rngs(0))
    u = 100.0 * jax.random.normal(jax.random.PRNGKey(3), (B, T, D))
    g = mixer.gates(u)
    assert float(g["eta"].min()) >= 0.0 and float(g["eta"].max()) <= float(np.float32(0.3))
    assert set(g) == {"eta", "alpha", "beta"}


@pytest.mark.fast
def test_v_l2_feeds_unit_norm_values_to_the_level(monkeypatch):
    """v_l2 L2-normalises each head's value before the level sees it (q, k untouched by it)."""
    from hope_jax import core
    seen = {}
    real = core.chunked_scan

    def spy(level, state, q, k, v, **gates):
        seen.update(q=q, k=k, v=v)
        return real(level, state, q, k, v, **gates)

    monkeypatch.setattr(core, "chunked_scan", spy)
    u = jax.random.normal(jax.random.PRNGKey(1), (B, 5, D))
    for v_l2 in (True, False):
        cfg = dataclasses.replace(MIXERS["titans_lmm"], v_l2=v_l2, method="generic")
        mixer = cfg.build(D, rngs=nnx.Rngs(0))
        mixer(u, mixer.init_state(B))
        norms = np.linalg.norm(np.asarray(seen["v"]), axis=-1)
        assert np.allclose(norms, 1.0, atol=1e-5) == v_l2
        assert np.allclose(np.linalg.norm(np.asarray(seen["k"]), axis=-1), 1.0, atol=1e-5)


@pytest.mark.fast
def test_titans_factory_step_bound_and_d19_divergence():
    """The Titans factory (D19's eta_max 1 with unit-norm values, the curvature-normalised step and
    dampened momentum) stays finite over 1024 tokens of random input where D19's gates with the
    plain step and raw values blow up (docs/layers.md)."""
    from hope_jax.layers import titans_lmm
    u = jax.random.normal(jax.random.PRNGKey(0), (1, 1024, 16))
    finite = {}
    for name, overrides in (("factory", {}), ("d19", dict(eta_max=1.0, v_l2=False, normalize=False,
                                                          momentum_dampening=False))):
        mixer = titans_lmm(2, **overrides).build(16, rngs=nnx.Rngs(0))
        finite[name] = bool(np.all(np.isfinite(np.asarray(_full(mixer, u)))))
    assert finite == {"factory": True, "d19": False}


def test_mag_gate_side():
    """MAG's two readings of the gate: D26 puts the sigmoid on the memory branch, gated="memory"
    on the attention branch (so the memory carries the content); a bad value is refused."""
    from hope_jax import layers
    u = jax.random.normal(jax.random.PRNGKey(0), (2, 9, D))
    outs = {}
    for gated in ("attention", "memory"):
        m = dataclasses.replace(MIXERS["titans_mag"], gated=gated).build(D, rngs=nnx.Rngs(0))
        y, _ = m.attention(u)
        mem, _ = m.memory(u)
        a, b = (m.norm_y(y), m.norm_m(mem)) if gated == "attention" else (m.norm_m(mem),
                                                                           m.norm_y(y))
        outs[gated], _ = m(u)
        np.testing.assert_allclose(outs[gated], a * jax.nn.sigmoid(b), rtol=1e-6, atol=1e-6)
    assert not np.allclose(outs["attention"], outs["memory"])
    with pytest.raises(ValueError, match="gated"):
        layers.titans_mag(2, gated="both")
