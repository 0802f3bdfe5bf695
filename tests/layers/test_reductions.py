"""Each recurrent mixer is exactly its known recurrence (design §4; core identities reused).

The reference here recomputes the layer by hand from its weights (projections → conv → SiLU →
L2 norm, gates, a token-by-token numpy recurrence, output norm, gate and projection), sharing no
code with `MemoryMixer` beyond the weights.
"""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from hope_jax import layers

B, T, D, H = 2, 9, 16, 2
DH = D // H


def _np(x):
    return np.asarray(x, np.float64)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hand_inputs(m, u):
    """q, k, v [B, T, H, d_h] and gates [B, T, H] recomputed from the mixer's weights."""
    def proj(dense, conv):
        x = u @ _np(dense.kernel[...])
        if conv is not None:
            w = _np(conv.weight[...])
            xp = np.concatenate([np.zeros((B, w.shape[0] - 1, x.shape[-1])), x], axis=1)
            x = sum(xp[:, j:j + T] * w[j] for j in range(w.shape[0]))
            x = x * _sig(x)
        return x.reshape(B, T, H, DH)

    conv = m.config.conv
    q = proj(m.w_q, m.conv_q if conv else None)
    k = proj(m.w_k, m.conv_k if conv else None)
    v = proj(m.w_v, m.conv_v if conv else None)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    if m.config.v_l2:
        v /= np.linalg.norm(v, axis=-1, keepdims=True)

    def gate(dense):
        return None if dense is None else _sig(u @ _np(dense.kernel[...]) + _np(dense.bias[...]))

    eta = (np.full((B, T, H), m.config.fixed_eta) if m.gate_eta is None
           else m.config.eta_max * gate(m.gate_eta))
    return q, k, v, eta, gate(m.gate_alpha), gate(m.gate_beta)


def _hand_output(m, u, o):
    """Output per-head RMSNorm, σ(u W_gate) and W_O applied to o [B, T, H, d_h]."""
    o = o / np.sqrt(np.mean(o ** 2, axis=-1, keepdims=True) + 1e-6) * _np(m.out_norm.scale[...])
    o = o.reshape(B, T, H * DH) * _sig(u @ _np(m.out_gate.kernel[...]))
    return o @ _np(m.w_o.kernel[...])


def _recurrence(step, m0, q, k, v, eta, alpha, beta):
    """y_t = M_t q_t with (M_t, S_t) = step(M_{t−1}, S_{t−1}, k, v, η, α, β) per sequence/head."""
    y = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            mem, s = m0[h].copy(), np.zeros_like(m0[h])
            for t in range(T):
                a = 1.0 if alpha is None else alpha[b, t, h]
                bt = 0.0 if beta is None else beta[b, t, h]
                mem, s = step(mem, s, k[b, t, h], v[b, t, h], eta[b, t, h], a, bt)
                y[b, t, h] = mem @ q[b, t, h]
    return y


I = np.eye(DH)
CASES = {
    # name: (config, token recurrence (M, S, k, v, η, α, β) → (M, S))
    "linear_attention": (layers.linear_attention(H, chunk_size=4),
                         lambda M, S, k, v, e, a, b: (M + np.outer(v, k), S)),
    "deltanet": (layers.deltanet(H, chunk_size=4),
                 lambda M, S, k, v, e, a, b: (M @ (I - e * np.outer(k, k)) + e * np.outer(v, k),
                                              S)),
    "gated_deltanet": (layers.gated_deltanet(H, chunk_size=4),
                       lambda M, S, k, v, e, a, b: (a * M @ (I - e * np.outer(k, k))
                                                    + e * np.outer(v, k), S)),
    # TTT-Linear at mini-batch 1 is online GD on ½‖Wk − v‖² (design §4, TTT paper)
    "ttt_linear": (layers.ttt_linear(H, chunk_size=1),
                   lambda M, S, k, v, e, a, b: (M - e * np.outer(M @ k - v, k), S)),
    # Titans with a linear memory at chunk 1: S = βS − η∇ℓ(M_{t−1}), M = αM + S (Titans Eq. 18)
    "titans_linear": (layers.titans_lmm(H, memory="matrix", chunk_size=1, num_persistent=0,
                                        gate_init_std=0.1, normalize=False,
                                        momentum_dampening=False),
                      lambda M, S, k, v, e, a, b: (lambda S2: (a * M + S2, S2))(
                          b * S - e * np.outer(M @ k - v, k))),
    # the factory's step: η' = η/(1 + ηρ) (ρ = ‖k‖² for a matrix memory), dampened momentum
    # S = βS − (1 − β) η' ∇ℓ (docs/hope.md, "Stable writes that matter")
    "titans_linear_factory": (
        layers.titans_lmm(H, memory="matrix", chunk_size=1, num_persistent=0, gate_init_std=0.1),
        lambda M, S, k, v, e, a, b: (lambda S2: (a * M + S2, S2))(
            b * S - (1 - b) * e / (1 + e * (k @ k)) * np.outer(M @ k - v, k))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixer_is_its_recurrence(name):
    cfg, step = CASES[name]
    cfg = dataclasses.replace(cfg, memory_init="default", gate_init_std=0.1)
    m = cfg.build(D, rngs=nnx.Rngs(3))
    u = jax.random.normal(jax.random.PRNGKey(5), (B, T, D))
    got = np.asarray(m(u)[0])
    un = _np(u)
    q, k, v, eta, alpha, beta = _hand_inputs(m, un)
    m0 = _np(m.memory0[0][...])
    o = _recurrence(step, m0, q, k, v, eta, alpha, beta)
    np.testing.assert_allclose(got, _hand_output(m, un, o), atol=2e-5, rtol=2e-4)


@pytest.mark.fast
def test_titans_ablation_switches_build_the_right_level():
    """Titans Table 5 rows are config switches (docs/layers.md)."""
    base = layers.titans_lmm(H)
    assert base.num_persistent == 4 and base.conv and base.momentum and base.retention
    assert base.memory == "mlp" and base.objective == "l2" and base.read == "post"
    lin = layers.MemoryMixer(D, dataclasses.replace(base, memory="matrix"), rngs=nnx.Rngs(0))
    assert lin.level.memory.depth == 1
    no_mom = layers.MemoryMixer(D, dataclasses.replace(base, momentum=False), rngs=nnx.Rngs(0))
    assert no_mom.level.spec.momentum_slot is None and no_mom.gate_beta is None
    no_decay = layers.MemoryMixer(D, dataclasses.replace(base, retention=False), rngs=nnx.Rngs(0))
    assert not no_decay.level.spec.retention and no_decay.gate_alpha is None
    no_conv = layers.MemoryMixer(D, dataclasses.replace(base, conv=False), rngs=nnx.Rngs(0))
    assert not hasattr(no_conv, "conv_q")
    no_p = layers.MemoryMixer(D, dataclasses.replace(base, num_persistent=0), rngs=nnx.Rngs(0))
    assert no_p.persistent is None
