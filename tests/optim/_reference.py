"""Hand-written numpy recurrences (float64) that the optax transforms of hope_jax.optim must match.

Each oracle takes a list of gradient dicts (numpy arrays) and returns the list of per-step outputs
(descent directions, before the learning rate), following the equations of docs/design.md literally.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

QUINTIC = (3.4445, -4.7750, 2.0315)


def random_tree(rng: np.random.Generator,
                shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """A dict of float64 Gaussian arrays with the given shapes."""
    return {k: rng.standard_normal(s) for k, s in shapes.items()}


def gradient_stream(seed: int, shapes: dict[str, tuple[int, ...]], steps: int = 5) -> list[dict]:
    """`steps` independent random gradient dicts."""
    rng = np.random.default_rng(seed)
    return [random_tree(rng, shapes) for _ in range(steps)]


def newton_schulz(x, steps=5, coeffs=QUINTIC, eps=1e-7):
    """NS_T of a matrix or a stack of matrices (design §2.7), transposing tall ones."""
    a, b, c = coeffs
    X = np.array(x, dtype=np.float64)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = np.swapaxes(X, -1, -2)
    X = X / (np.sqrt(np.sum(X * X, axis=(-2, -1), keepdims=True)) + eps)
    for _ in range(steps):
        A = X @ np.swapaxes(X, -1, -2)
        B = b * A + c * A @ A
        X = a * X + B @ X
    return np.swapaxes(X, -1, -2) if tall else X


def ns_if_matrix(x, **kw):
    """NS on rank ≥ 2 arrays, identity on vectors (default mask without excluded names)."""
    return newton_schulz(x, **kw) if x.ndim >= 2 else x


def preconditioned_momentum(grads, beta, diagonal=False, b2=0.999, eps=1e-8, nesterov=False):
    """s ← β s + P g, P = I or 1/(√v̂ + ε) (NL Eq. 47)."""
    s = {k: np.zeros_like(v) for k, v in grads[0].items()}
    nu = {k: np.zeros_like(v) for k, v in grads[0].items()}
    outs = []
    for t, g in enumerate(grads, start=1):
        out = {}
        for k in g:
            pg = g[k]
            if diagonal:
                nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
                pg = g[k] / (np.sqrt(nu[k] / (1 - b2**t)) + eps)
            s[k] = beta * s[k] + pg
            out[k] = beta * s[k] + pg if nesterov else s[k].copy()
        outs.append(out)
    return outs


def delta_momentum(grads, beta, gamma, eps=1e-8, matrix=False):
    """s ← β s − γ⟨s, ĝ⟩ĝ + g (flat), or s (βI − γ ĜᵀĜ) + g on matrices (NL Eq. 49, D27)."""
    s = {k: np.zeros_like(v) for k, v in grads[0].items()}
    outs = []
    for g in grads:
        for k in g:
            if matrix and g[k].ndim == 2:
                G = g[k] / (np.linalg.norm(g[k]) + eps)
                s[k] = s[k] @ (beta * np.eye(G.shape[1]) - gamma * G.T @ G) + g[k]
            else:
                gh = g[k].ravel() / (np.linalg.norm(g[k].ravel()) + eps)
                flat = s[k].ravel()
                s[k] = (beta * flat - gamma * (flat @ gh) * gh).reshape(g[k].shape) + g[k]
        outs.append({k: v.copy() for k, v in s.items()})
    return outs


def gelu(z):
    """Exact GELU."""
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def gelu_prime(z):
    """d/dz of the exact GELU: Φ(z) + z φ(z)."""
    return 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def dmgd(grads, beta, inner_lr, buffer_lr, w2_init, w1_init=0.0, objective="dot", train=True):
    """DMGD per coordinate, d = b + Σ_h w1_h σ(w2_h u), one GD step on φ, output d_{φ_new}(u)."""
    h = len(w2_init)
    state = {k: (np.zeros_like(v), np.full(h, w1_init), np.array(w2_init, float))
             for k, v in grads[0].items()}
    outs = []
    for g in grads:
        out = {}
        for k, u in g.items():
            b, w1, w2 = state[k]
            n = u.size
            uf = u.ravel()
            z = np.outer(uf, w2)  # (n, h)
            d_old = b.ravel() + gelu(z) @ w1
            if objective == "dot":  # L = −Σ_j d_j u_j
                dL_dd = -uf
            else:  # L = ½ Σ_j (d_j − u_j)²
                dL_dd = d_old - uf
            grad_b = dL_dd.reshape(u.shape)
            grad_w1 = (dL_dd[:, None] * gelu(z)).sum(0) / n
            grad_w2 = (dL_dd[:, None] * w1[None, :] * gelu_prime(z) * uf[:, None]).sum(0) / n
            b = beta * b - buffer_lr * grad_b
            if train:
                w1, w2 = beta * w1 - inner_lr * grad_w1, beta * w2 - inner_lr * grad_w2
            state[k] = (b, w1, w2)
            out[k] = (b.ravel() + gelu(np.outer(uf, w2)) @ w1).reshape(u.shape)
        outs.append(out)
    return outs


def adam(grads, b1, b2, eps):
    """Adam's direction m̂/(√v̂ + ε) (no weight decay)."""
    m = {k: np.zeros_like(v) for k, v in grads[0].items()}
    v = {k: np.zeros_like(x) for k, x in grads[0].items()}
    outs = []
    for t, g in enumerate(grads, start=1):
        out = {}
        for k in g:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            out[k] = (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
        outs.append(out)
    return outs


def m3(grads, b1, b2, b3, alpha, f, eps, printed=False):
    """NL Algorithm 1 (D15 EMA + bias correction, or the printed accumulators). Returns (outs,
    o2s)."""
    z = lambda: {k: np.zeros_like(v) for k, v in grads[0].items()}
    m1, v, m2, o2, G = z(), z(), z(), z(), z()
    outs, o2s, k_slow = [], [], 0
    for t, g in enumerate(grads, start=1):
        out = {}
        for k in g:
            if printed:
                m1[k] = m1[k] + b1 * g[k]
                v[k] = v[k] + b2 * g[k] ** 2
                m1h, vh = m1[k], v[k]
            else:
                m1[k] = b1 * m1[k] + (1 - b1) * g[k]
                v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
                m1h, vh = m1[k] / (1 - b1**t), v[k] / (1 - b2**t)
            o1 = ns_if_matrix(m1h)
            out[k] = (o1 + alpha * o2[k]) / (np.sqrt(vh) + eps)
            G[k] = G[k] + g[k]
        if t % f == 0:
            k_slow += 1
            for k in g:
                if printed:
                    m2[k] = m2[k] + b3 * G[k]
                    o2[k] = ns_if_matrix(m2[k])
                else:
                    m2[k] = b3 * m2[k] + (1 - b3) * G[k] / f
                    o2[k] = ns_if_matrix(m2[k] / (1 - b3**k_slow))
                G[k] = np.zeros_like(G[k])
        outs.append(out)
        o2s.append({k: x.copy() for k, x in o2.items()})
    return outs, o2s
