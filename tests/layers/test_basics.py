"""Norms, RoPE, causal conv, SwiGLU, and attention against hand-written references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import layers
from hope_jax.models.decoder import Block

B, T, D, H = 2, 10, 32, 4


def _x(seed, shape=(B, T, D)):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.fast
def test_norms():
    x = 3.0 * _x(0)
    y = layers.RMSNorm(D, rngs=nnx.Rngs(0))(x)
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(y), -1)), 1.0, rtol=1e-4)
    z = layers.l2_normalize(x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    hn = layers.HeadRMSNorm(H, D // H, rngs=nnx.Rngs(0))(x.reshape(B, T, H, D // H))
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(hn), -1)), 1.0, rtol=1e-4)
    xb = x.astype(jnp.bfloat16)
    assert layers.RMSNorm(D, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)(xb).dtype == jnp.bfloat16


@pytest.mark.fast
def test_rope_is_a_rotation_and_relative():
    q, k = _x(1, (1, T, H, 8)), _x(2, (1, T, H, 8))
    pos = jnp.arange(T)
    rq = layers.apply_rope(q, pos)
    np.testing.assert_allclose(np.linalg.norm(rq, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-5)
    # ⟨R_{p+s} q, R_{p'+s} k⟩ depends only on p − p'
    dots = lambda s: jnp.einsum("bthd,bthd->bth", layers.apply_rope(q, pos + s),
                                layers.apply_rope(k[:, ::-1], pos + s))
    np.testing.assert_allclose(dots(0), dots(17), atol=1e-4)


@pytest.mark.fast
def test_causal_conv_streams_and_is_causal():
    conv = layers.CausalConv(D, 4, rngs=nnx.Rngs(0))
    x = _x(3)
    y, _ = conv(x)
    # reference: y_t = Σ_j w_j x_{t−3+j}
    w = np.asarray(conv.weight[...])
    xp = np.concatenate([np.zeros((B, 3, D)), np.asarray(x)], 1)
    np.testing.assert_allclose(y, sum(xp[:, j:j + T] * w[j] for j in range(4)), atol=1e-5)
    ya, s = conv(x[:, :3])
    outs = [ya]
    for t in range(3, T):
        yt, s = conv(x[:, t:t + 1], s)
        outs.append(yt)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), y, atol=1e-6)
    y2, _ = conv(x.at[:, 6].add(1.0))
    np.testing.assert_array_equal(y2[:, :6], y[:, :6])


def _ref_attention(x, att, window=None):
    """softmax(q kᵀ/√d_h + causal mask) v with RoPE, written out."""
    dh = D // H
    def heads(dense):
        return (np.asarray(x) @ np.asarray(dense.kernel[...])).reshape(B, T, H, dh)
    q, k, v = heads(att.w_q), heads(att.w_k), heads(att.w_v)
    pos = np.arange(T)
    inv = 10000.0 ** (-np.arange(dh // 2) * 2.0 / dh)
    ang = pos[:, None] * inv
    def rot(z):
        z1, z2 = z[..., :dh // 2], z[..., dh // 2:]
        c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
        return np.concatenate([z1 * c - z2 * s, z2 * c + z1 * s], -1)
    q, k = rot(q), rot(k)
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(dh)
    mask = pos[None, :] <= pos[:, None]
    if window is not None:
        mask &= pos[None, :] > pos[:, None] - window
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("bhts,bshd->bthd", p, v).reshape(B, T, D)
    return o @ np.asarray(att.w_o.kernel[...])


@pytest.mark.fast
def test_transformer_pp_block_equals_reference():
    """Block = x + Attn(RMSNorm(x)); then + SwiGLU(RMSNorm(·)), with hand-written attention."""
    block = Block(D, layers.AttentionConfig(num_heads=H), layers.SwiGLUConfig(), rngs=nnx.Rngs(0))
    x = _x(4)
    got, _ = block(x)
    def rms(z):
        return z / np.sqrt(np.mean(z ** 2, -1, keepdims=True) + 1e-6)
    h = np.asarray(x) + _ref_attention(rms(np.asarray(x)), block.mixer)
    z = rms(h)
    mlp = block.mlp
    g = z @ np.asarray(mlp.w_gate.kernel[...])
    up = z @ np.asarray(mlp.w_up.kernel[...])
    want = h + (g / (1 + np.exp(-g)) * up) @ np.asarray(mlp.w_down.kernel[...])
    assert mlp.hidden == 128  # roundup_64(8·32/3) = 128 (D20)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.fast
def test_sliding_window_and_persistent_prefix():
    att = layers.AttentionConfig(num_heads=H, window=3).build(D, rngs=nnx.Rngs(0))
    x = _x(5)
    np.testing.assert_allclose(att(x)[0], _ref_attention(x, att, window=3), atol=1e-4)
    # persistent keys are seen by every query: output of token 0 differs from v_0 alone
    attp = layers.AttentionConfig(num_heads=H, window=3, num_persistent=2).build(
        D, rngs=nnx.Rngs(0))
    y = attp(x)[0]
    no_prefix = _ref_attention(x, attp, window=3)
    assert np.abs(np.asarray(y) - no_prefix)[:, 0].max() > 1e-4
