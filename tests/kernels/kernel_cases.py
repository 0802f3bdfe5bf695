"""Shared helpers for the kernel tests: random inputs, a differentiable probe, comparisons."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def linear_inputs(seed: int, b: int, t: int, h: int, d_k: int, d_v: int, dtype=jnp.float32):
    """q, k (L2-normalised), v, gates in their ranges (D7), and a small initial state."""
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    q = unit(jax.random.normal(ks[0], (b, t, h, d_k))).astype(dtype)
    k = unit(jax.random.normal(ks[1], (b, t, h, d_k))).astype(dtype)
    v = jax.random.normal(ks[2], (b, t, h, d_v)).astype(dtype)
    eta = jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h)) - 1.0)
    alpha = jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h)) + 3.0)
    w0 = 0.1 * jax.random.normal(ks[5], (b, h, d_v, d_k))
    return dict(q=q, k=k, v=v, eta=eta, alpha=alpha, w0=w0)


def mlp_inputs(seed: int, b: int, t: int, h: int, d: int, hidden: int, dtype=jnp.float32):
    """q, k (L2-normalised), v, gates, memory (W_in ~ N(0, 1/d), W_out ~ N(0, 0.02²); D19) and a
    non-zero initial momentum (so its gradient is exercised)."""
    ks = jax.random.split(jax.random.PRNGKey(seed), 10)
    x = linear_inputs(seed, b, t, h, d, d, dtype)
    x.pop("w0")
    x["beta"] = jax.nn.sigmoid(jax.random.normal(ks[6], (b, t, h)))
    x["params"] = (d ** -0.5 * jax.random.normal(ks[7], (b, h, hidden, d)),
                   0.02 * jax.random.normal(ks[8], (b, h, d, hidden)))
    x["momentum"] = (0.01 * jax.random.normal(ks[9], (b, h, hidden, d)),
                     0.01 * jax.random.normal(ks[5], (b, h, d, hidden)))
    return x


def probe_loss(y, states) -> jax.Array:
    """A scalar that depends on every output element and every state entry, non-trivially."""
    y = y.astype(jnp.float32)
    probe = jnp.cos(jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape))
    return jnp.sum(jnp.sin(y) * probe) + sum(jnp.sum(jnp.tanh(w)) for w in jax.tree.leaves(states))


def values_and_grads(fn, args: dict, names: list[str]):
    """jit(value_and_grad) of probe_loss(fn(**args)) w.r.t. `names`; returns (outputs, grads)."""

    def scalar(diff, rest):
        out = fn(**diff, **rest)
        return probe_loss(out[0], out[1:]), out

    diff = {n: args[n] for n in names}
    rest = {n: a for n, a in args.items() if n not in names}
    (_, out), grads = jax.jit(jax.value_and_grad(scalar, has_aux=True))(diff, rest)
    return out, grads


def rel_err(a, b) -> float:
    """max |a − b| / max |b| (computed in float64)."""
    a = np.asarray(jnp.asarray(a, jnp.float32), np.float64)
    b = np.asarray(jnp.asarray(b, jnp.float32), np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_tree_close(got, want, rtol: float, what: str) -> None:
    """Leaf by leaf: every leaf finite and within `rtol` relative error of the reference."""
    paths_g = jax.tree_util.tree_leaves_with_path(got)
    leaves_w = jax.tree.leaves(want)
    assert len(paths_g) == len(leaves_w), what
    for (path, g), w in zip(paths_g, leaves_w):
        assert g.shape == w.shape, (what, path, g.shape, w.shape)
        assert bool(jnp.all(jnp.isfinite(jnp.asarray(g, jnp.float32)))), (what, path, "not finite")
        err = rel_err(g, w)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert err <= rtol, f"{where}: relative error {err:.2e} > {rtol:.0e}"
