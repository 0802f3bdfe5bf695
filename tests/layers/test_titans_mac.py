"""Titans MAC (memory as context, design §3.6, Titans Eqs. 21–25) against a plain loop over
segments, streaming (prefill + steps, token-by-token calls), causality, gradients and the
presets."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import layers
from hope_jax.models import Decoder, get_config
from hope_jax.models.param_count import abstract_model, count_params

B, D, H, C, T = 2, 16, 2, 4, 11  # segment C = 4: two full segments and a partial one


@pytest.fixture(scope="module", params=["attention", "memory"])
def mac(request):
    """MAC with either branch of the final gate under the sigmoid (D26's and the presets')."""
    cfg = layers.titans_mac(H, segment=C, num_persistent=3, chunk_size=2, eta_bias=-3.0,
                            gated=request.param)
    model = cfg.build(D, rngs=nnx.Rngs(0))
    u = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    return model, u


def _np(x):
    return np.asarray(x, np.float64)


def reference(mac, u):
    """Eqs. 21–25 segment by segment, written out: numpy retrieval per head, numpy attention over
    [persistent || h || segment] with the causal mask, the memory streamed with a carried state."""
    dh = D // H
    a = mac.attention
    apply = mac.memory.level.memory.apply
    p = a.persistent[...]
    pk, pv = _np(a.w_k(p)).reshape(-1, H, dh), _np(a.w_v(p)).reshape(-1, H, dh)
    ms = mac.memory.init_state(B)
    memory = nnx.jit(lambda m, y, s: m(y, s))  # the LMM as a black box (tested on its own)
    outs = []
    for s0 in range(0, T, C):
        x = u[:, s0:s0 + C]
        n = x.shape[1]
        pos = jnp.arange(n, dtype=jnp.int32)  # RoPE positions within the segment
        # Eq. 21: h = M*_{t−1}(q), read at the memory after the previous segments, no write
        q = _np(mac.w_retrieve(x)).reshape(B, n, H, dh)
        q /= np.sqrt((q ** 2).sum(-1, keepdims=True) + 1e-6)
        r = np.stack([np.stack([_np(apply(tuple(w[b, hh] for w in ms.level.memory),
                                          jnp.asarray(q[b, :, hh], jnp.float32)))
                                for hh in range(H)], 1) for b in range(B)])
        r = _np(mac.retrieve_norm(jnp.asarray(r, jnp.float32)))
        h = mac.w_retrieved(jnp.asarray(r.reshape(B, n, H * dh), jnp.float32))
        # Eqs. 22–23: attention over [p] || h || S, causal for h and S alike
        rot = lambda z: _np(layers.apply_rope(z.reshape(B, n, H, dh), pos, 10000.0))
        qa, kh, ks = rot(a.w_q(x)), rot(a.w_k(h)), rot(a.w_k(x))
        vh, vs = _np(a.w_v(h)).reshape(B, n, H, dh), _np(a.w_v(x)).reshape(B, n, H, dh)
        y = np.zeros((B, n, H, dh))
        for b in range(B):
            for hh in range(H):
                for i in range(n):
                    keys = np.concatenate([pk[:, hh], kh[b, :i + 1, hh], ks[b, :i + 1, hh]])
                    vals = np.concatenate([pv[:, hh], vh[b, :i + 1, hh], vs[b, :i + 1, hh]])
                    s = keys @ qa[b, i, hh] / np.sqrt(dh)
                    w = np.exp(s - s.max())
                    y[b, i, hh] = (w / w.sum()) @ vals
        y = a.w_o(jnp.asarray(y.reshape(B, n, D), jnp.float32))
        # Eqs. 24–25: write y into the memory, read M*(y), gate
        m, ms = memory(mac.memory, y, ms)
        if mac.config.gated == "attention":
            outs.append(_np(mac.norm_y(y) * jax.nn.sigmoid(mac.norm_m(m))))
        else:
            outs.append(_np(mac.norm_m(m) * jax.nn.sigmoid(mac.norm_y(y))))
    return np.concatenate(outs, axis=1)


def test_mac_equals_segment_loop_reference(mac):
    """The scanned segments equal the written-out loop of Eqs. 21–25 (fp32, 1e-5)."""
    model, u = mac
    got = np.asarray(nnx.jit(lambda m, x: m(x)[0])(model, u))
    want = reference(model, u)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_mac_streaming_and_causality(mac):
    """Prefill (mid-segment, or at a boundary) + single-token steps, and a multi-token call from
    mid-sequence, equal one call; perturbing token t changes no output before t."""
    model, u = mac
    full = nnx.jit(lambda m, x: m(x)[0])
    want = np.asarray(full(model, u))
    call = nnx.jit(lambda m, x, s: m(x, s))
    prefill = nnx.jit(lambda m, x: m(x, m.init_state(B)))
    prefilled = {}
    for t0 in (6, 8):
        y, s = prefilled[t0] = prefill(model, u[:, :t0])
        outs = [y]
        for i in range(t0, T):
            y, s = call(model, u[:, i:i + 1], s)
            outs.append(y)
        np.testing.assert_allclose(np.concatenate(outs, 1), want, atol=1e-5, rtol=1e-5)
    y2, _ = call(model, u[:, 6:], prefilled[6][1])  # 5 tokens from mid-segment, one call
    np.testing.assert_allclose(np.asarray(y2), want[:, 6:], atol=1e-5, rtol=1e-5)
    for t in (5, 8):  # inside a segment, and at a segment start
        u2 = u.at[:, t].add(1.0)
        got = np.asarray(full(model, u2))
        np.testing.assert_array_equal(got[:, :t], want[:, :t])
        assert np.abs(got[:, t:] - want[:, t:]).max() > 1e-6


def test_mac_gradients_are_finite_and_reach_every_part(mac):
    """Outer gradients are finite and reach the persistent tokens, retrieval and memory M_0."""
    model, u = mac
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(jnp.square(m(u)[0]))))(model)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    for g in (grads.attention.persistent, grads.w_retrieve.kernel, grads.memory.memory0[0]):
        assert float(jnp.abs(g[...]).max()) > 0


def test_mac_presets_build():
    """arch "titans_mac" builds at every size (jax.eval_shape, no FLOPs; counted with scan_blocks,
    the same count, tests/models/test_presets.py); paper sizes are parameter-matched to
    Transformer++ (±10%); tiny logits have shape [B, T, V]."""
    def count(arch, size):
        cfg = dataclasses.replace(get_config(arch, size), scan_blocks=True)
        return count_params(abstract_model(cfg))

    for size in ("tiny", "small", "340m", "760m", "1.3b"):
        n = count("titans_mac", size)
        if size in ("340m", "760m", "1.3b"):
            assert abs(n / count("transformer", size) - 1) < 0.1
    cfg = get_config("titans_mac", "tiny")
    out = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))(
        jnp.zeros((1, cfg.max_len), jnp.int32)))
    assert out.shape == (1, cfg.max_len, cfg.vocab_size)


@pytest.mark.fast
def test_mac_config_errors():
    with pytest.raises(ValueError, match="multiple of the memory chunk"):
        layers.titans_mac(H, segment=6, chunk_size=4)
    with pytest.raises(ValueError, match="gated"):
        layers.titans_mac(H, segment=4, chunk_size=4, gated="neither")
    with pytest.raises(ValueError, match="persistent"):
        layers.TitansMACConfig(layers.titans_lmm(H), layers.AttentionConfig(H), 64)
