"""Shared cases for the core tests: random inputs, levels, an explicit chunk loop, comparisons.

The explicit loop here is written from the equations of docs/design.md (§2, §6.4, D2, D3, D5) with
autodiff gradients at the chunk snapshot; it shares no code with `hope_jax.core`'s scan paths
or with its inner optimizer transforms.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hope_jax import core


def random_inputs(seed: int, b: int, t: int, h: int, d_k: int, d_v: int, dtype=jnp.float64,
                  eta_shift: float = -1.0) -> dict:
    """q, k (L2-normalised, as the layers produce them), v, and gates in their ranges (D7)."""
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    k = jax.random.normal(ks[0], (b, t, h, d_k), dtype)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    q = jax.random.normal(ks[1], (b, t, h, d_k), dtype)
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    v = jax.random.normal(ks[2], (b, t, h, d_v), dtype)
    eta = jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h), dtype) + eta_shift)
    alpha = jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h), dtype) + 3.0)
    beta = jax.nn.sigmoid(jax.random.normal(ks[5], (b, t, h), dtype))
    return dict(q=q, k=k, v=v, eta=eta, alpha=alpha, beta=beta)


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
    """An inner optimizer and, independently, the flags of the update it should perform."""

    name: str
    make: callable
    normalize: bool = False
    momentum: bool = False
    retention: bool = False
    dgd: bool = False
    dgd_normalize: bool = True
    gated: bool = False
    curvature: bool = False  # η' = η/(1 + ηρ), ρ = ‖G‖²/‖e‖² at the snapshot, in both places
    chunk_causal: bool = False  # the step's η' × μ = 1 + ⟨G, W_{t−1} − W_snap⟩/‖e‖² (C > 1)
    dampening: bool = False  # S ← β S − (1 − β) η' G
    anchor: bool = False  # retention toward the initial memory: α W + (1 − α) W_init


OPTIMIZERS = {
    "gd": OptimizerCase("gd", lambda: core.gd(), retention=True),
    "gd_plain": OptimizerCase("gd_plain", lambda: core.gd(retention=False)),
    "momentum": OptimizerCase("momentum", lambda: core.momentum_gd(), momentum=True,
                              retention=True),
    "momentum_norm": OptimizerCase("momentum_norm", lambda: core.momentum_gd(normalize=True),
                                   normalize=True, momentum=True, retention=True),
    "dgd": OptimizerCase("dgd", lambda: core.dgd(), normalize=True, momentum=True, retention=True,
                         dgd=True),
    "dgd_no_momentum": OptimizerCase("dgd_no_momentum", lambda: core.dgd(momentum=False),
                                     normalize=True, retention=True, dgd=True),
    "dgd_curvature": OptimizerCase("dgd_curvature",
                                   lambda: core.dgd(normalize="curvature", dampening=True),
                                   momentum=True, retention=True, dgd=True, curvature=True,
                                   dampening=True, chunk_causal=True),
    "dgd_curvature_token": OptimizerCase("dgd_curvature_token",
                                         lambda: core.dgd(normalize="curvature_token",
                                                          dampening=True),
                                         momentum=True, retention=True, dgd=True, curvature=True,
                                         dampening=True),
    "dgd_anchor": OptimizerCase("dgd_anchor",
                                lambda: core.dgd(normalize="curvature", dampening=True,
                                                 retain_to_init=True),
                                momentum=True, retention=True, dgd=True, curvature=True,
                                dampening=True, anchor=True, chunk_causal=True),
    "momentum_curvature": OptimizerCase("momentum_curvature",
                                        lambda: core.momentum_gd(normalize="curvature"),
                                        momentum=True, retention=True, curvature=True,
                                        chunk_causal=True),
    "gdn": OptimizerCase("gdn", lambda: core.dgd(momentum=False, normalize=False, gated=True),
                         retention=True, dgd=True, dgd_normalize=False, gated=True),
}

MEMORIES = {
    "matrix": lambda: core.matrix_memory(),
    "residual_linear": lambda: core.MLPMemory(depth=1, residual=True),
    "mlp": lambda: core.residual_mlp_memory(expansion=2),
    "mlp3_tanh": lambda: core.MLPMemory(depth=3, hidden=6, activation=jnp.tanh, residual=True),
}

OBJECTIVES = {"l2": core.l2, "dot": core.dot_product}


def make_level(memory: str, objective: str, optimizer: str, **kw) -> core.Level:
    return core.Level(MEMORIES[memory](), OBJECTIVES[objective](), OPTIMIZERS[optimizer].make(),
                      **kw)


def gates_for(case: OptimizerCase, inputs: dict) -> dict:
    """The gate arguments a level with this optimizer takes."""
    out = dict(eta=inputs["eta"])
    if case.retention or case.gated:
        out["alpha"] = inputs["alpha"]
    if case.momentum:
        out["beta"] = inputs["beta"]
    return out


def explicit_chunk_loop(memory: core.MLPMemory, objective: core.Objective, case: OptimizerCase,
                        chunk: int, read: str, params, q, k, v, eta, alpha=None, beta=None):
    """Design §6.4 written as loops: per chunk, autodiff gradients at the snapshot; per token,
    S ← β S − η_e G; W₀ ← W₀(α I − p k kᵀ) + S (DGD, input layer), W_l ← α W_l + S.

    params: tuple of [H, out, in]; inputs [B, T, H, ·]. Returns (y [B, T, H, d_v], memory, momentum)
    with memory/momentum leaves [B, H, out, in].
    """

    def loss(p, k_t, v_t):
        return objective.loss(memory.apply(p, k_t), v_t)

    def one_head(p0, q, k, v, eta, alpha, beta):
        w = list(p0)
        s = [jnp.zeros_like(x) for x in p0]
        t_len = k.shape[0]
        ys = []
        for start in range(0, t_len, chunk):
            snap = tuple(w)
            for t in range(start, min(start + chunk, t_len)):
                g = jax.grad(loss)(snap, k[t], v[t])
                y_pre = memory.apply(tuple(w), q[t])
                eta_n = eta[t] / (1.0 + eta[t] * jnp.sum(k[t] ** 2))
                if case.curvature:  # ρ = ‖G‖² / ‖∂ℓ/∂y‖² of this token at the snapshot
                    e = jax.grad(lambda y: objective.loss(y, v[t]))(memory.apply(snap, k[t]))
                    rho = sum(jnp.sum(x ** 2) for x in g) / jnp.sum(e ** 2)
                    eta_n = eta[t] / (1.0 + eta[t] * rho)
                eta_e = eta_n if (case.normalize or case.curvature) else eta[t]
                if case.chunk_causal and memory.depth > 1:  # what W_{t−1} left of e at the snap
                    e = jax.grad(lambda y: objective.loss(y, v[t]))(memory.apply(snap, k[t]))
                    moved = sum(jnp.sum(gl * (wl - sl)) for gl, wl, sl in zip(g, w, snap))
                    eta_e = eta_e * (1.0 + moved / jnp.sum(e ** 2))
                if case.dampening:
                    eta_e = eta_e * (1.0 - beta[t])
                a = alpha[t] if case.retention else 1.0
                p = (eta_n if case.dgd_normalize else eta[t]) * (alpha[t] if case.gated else 1.0)
                for l in range(len(w)):
                    if case.momentum:
                        s[l] = beta[t] * s[l] - eta_e * g[l]
                        inc = s[l]
                    else:
                        inc = -eta_e * g[l]
                    new = a * w[l] + inc
                    if case.anchor:
                        new = new + (1.0 - a) * p0[l]
                    if case.dgd and l == 0:
                        new = new - p * jnp.outer(w[0] @ k[t], k[t])
                    w[l] = new
                if read == "pre":
                    ys.append(y_pre)
                elif read == "post":
                    ys.append(memory.apply(tuple(w), q[t]))
                else:
                    ys.append(memory.apply(snap, q[t]))
        return jnp.stack(ys), tuple(w), tuple(s)

    def move(x):
        return None if x is None else jnp.moveaxis(x, 2, 1)

    b = k.shape[0]
    ones = jnp.ones(eta.shape, eta.dtype)
    args = [move(x) for x in (q, k, v, eta, ones if alpha is None else alpha,
                              ones if beta is None else beta)]
    per_head = jax.vmap(one_head, in_axes=(0, 0, 0, 0, 0, 0, 0))
    per_batch = jax.vmap(per_head, in_axes=(None, 0, 0, 0, 0, 0, 0))
    y, w, s = per_batch(params, *args)
    del b
    return jnp.moveaxis(y, 1, 2), w, s


def rel_err(a, b) -> float:
    """max |a − b| / max |b| over all leaves of two pytrees."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb), (len(la), len(lb))
    if not la:
        return 0.0
    num = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
              for x, y in zip(la, lb))
    den = max(float(np.max(np.abs(np.asarray(y, np.float64)))) for y in lb)
    return num / max(den, 1e-30)


def assert_close(a, b, rtol: float, what: str = "") -> None:
    err = rel_err(a, b)
    assert np.isfinite(err) and err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.1e}"


def outputs_and_grads(scan_fn, level: core.Level, params, inputs: dict, gates: dict):
    """(y, final memory, final optimizer state) and the gradients of a scalar of them w.r.t. the
    initial memory, q, k, v and every gate. One jit per call."""
    names = ["q", "k", "v"] + sorted(gates)

    def scalar(params, *args):
        kw = dict(zip(names, args))
        b = kw["k"].shape[0]
        y, state = scan_fn(level, level.init_state(params, b), **kw)
        probe = jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))
        total = jnp.sum(jnp.sin(y) * probe)
        total = total + sum(jnp.sum(jnp.tanh(w))
                            for w in jax.tree.leaves((state.memory, state.opt_state)))
        return total, (y, state.memory, state.opt_state)

    fn = jax.jit(jax.value_and_grad(scalar, argnums=tuple(range(1 + len(names))), has_aux=True))
    args = [inputs[n] if n in inputs and n not in gates else gates[n] for n in names]
    (_, (y, memory, opt_state)), grads = fn(params, *args)
    return dict(y=y, memory=memory, opt_state=opt_state, grads=grads)
