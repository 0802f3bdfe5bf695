"""One chunk of a level in closed form: no per-token gradient is ever materialised.

For an MLP memory every layer gradient is an outer product `G_i = δ_i a_iᵀ` (design §3.1), so the
retention- and momentum-weighted sums of a chunk collapse to one matmul per layer with scalar
per-token coefficients (Titans Eq. 17, generalised to momentum and to every MLP layer; see
`coefficients.py`), and reads of the running state `W_t` inside the chunk become causal masked
matmuls (TTT's dual form, layer by layer, D2):

    W_t x_t = ᾱ_t W_0 x_t + κ_t S_0 x_t − Σ_i c_G[t, i] (a_iᵀ x_t) δ_i
              − Σ_s c_U[t, s] (k_sᵀ x_t) u_s.

The DGD preconditioner `W (α I − p k kᵀ)` on the input-side layer (D3) is not scalar: its
predictions `u_t = W_{t−1} k_t` solve a unit lower-triangular system (the chunkwise WY/UT form of
DeltaNet / Gated DeltaNet, design §6.4):

    (I + L) U = B,   L[t, s] = c_U[t−1, s] (k_sᵀ k_t)  (s < t),
    B_t = ᾱ_{t−1} W_0 k_t + κ_{t−1} S_0 k_t − Σ_i c_G[t−1, i] (a_iᵀ k_t) δ_i.

All functions here act on one head of one sequence; the scan vmaps them over batch and heads.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from hope_jax.core.coefficients import (ChunkCoefficients, chunk_coefficients, unit_lower_inverse,
                                        unit_lower_solve)
from typing import NamedTuple

from hope_jax.core.inner_optimizers import RecurrenceSpec, normalized_step_size
from hope_jax.core.memories import MLPMemory
from hope_jax.core.objectives import Objective

Array = jax.Array
sg = jax.lax.stop_gradient


def effective_gates(spec: RecurrenceSpec, k: Array, eta: Array, alpha: Array | None,
                    beta: Array | None, mask: Array | None):
    """Per-token (η_e, α, β, p) of the canonical write, with padding frozen (D35).

    At a padded token the write is the identity: η_e = p = 0, α = β = 1 and the momentum is not
    added (write mask 0), so the carried state is independent of the padding.
    """
    dtype = k.dtype
    eta_norm = None
    if spec.normalize_step or (spec.dgd and spec.dgd_normalize):
        eta_norm = normalized_step_size(eta, k)
    eta_e = eta_norm if spec.normalize_step else eta  # with step_curvature: ρ in the deltas
    alpha_e = alpha if spec.retention else jnp.ones_like(eta)
    beta_e = beta if spec.momentum_slot is not None else None
    if spec.momentum_dampening and beta_e is not None:  # S = β S + (1 − β) u
        eta_e = eta_e * (1.0 - beta_e)
    p = None
    if spec.dgd:
        # dgd_curvature: the raw η here, rescaled per memory in closed_form_chunk
        p = eta_norm if spec.dgd_normalize and not spec.dgd_curvature else eta
        if spec.dgd_gated:
            p = p * alpha
    if mask is not None:
        m = mask.astype(dtype)
        eta_e = eta_e * m
        alpha_e = jnp.where(mask, alpha_e, 1.0)
        beta_e = None if beta_e is None else jnp.where(mask, beta_e, 1.0)
        p = None if p is None else p * m
    return eta_e, alpha_e, beta_e, p


class ChunkPrep(NamedTuple):
    """The state-independent part of a chunk, computed for all chunks in parallel before the scan.

    coeffs: the scalar coefficients of the writes (`coefficients.py`).
    qk: [C, C] scores q_t · k_i of the input-side layer's reads.
    kk: [C, C] key Gram matrix k_t · k_i (DGD only, else None).
    system_inverse: (I + L)⁻¹ [C, C] of the DGD predictions' triangular system, or None.
    curvature_eta: [C] the raw η_t of the curvature-normalised step (`spec.step_curvature`), else
      None: each memory scales its token gradients by 1/(1 + η_t ρ_t) with its own ρ_t.
    """

    coeffs: ChunkCoefficients
    qk: Array
    kk: Array | None
    system_inverse: Array | None
    curvature_eta: Array | None = None


def prepare_chunk(spec: RecurrenceSpec, stop_writes: bool, q: Array, k: Array, eta: Array,
                  alpha: Array | None, beta: Array | None, mask: Array | None) -> ChunkPrep:
    """Coefficients, read scores and the inverse DGD system of one chunk (one head, one
    sequence)."""
    if stop_writes:
        k, eta = sg(k), sg(eta)
        alpha = None if alpha is None else sg(alpha)
        beta = None if beta is None else sg(beta)
    c = k.shape[0]
    eta_e, alpha_e, beta_e, p = effective_gates(spec, k, eta, alpha, beta, mask)
    live = None if mask is None else mask.astype(k.dtype)
    co = chunk_coefficients(eta_e, alpha_e, beta_e, p, live)
    kk = inverse = None
    if spec.dgd:
        kk = k @ k.T
    if spec.dgd and not spec.dgd_curvature:  # curvature: each memory builds its own system
        # zero on and above the diagonal; matmuls, not a LAPACK triangular solve (docs/core.md,
        # "No triangular solves")
        inverse = unit_lower_inverse(co.precond_weights[:c] * kk)
    curvature = spec.step_curvature or (spec.dgd and spec.dgd_curvature)
    return ChunkPrep(co, q @ k.T, kk, inverse, eta if curvature else None)


def curvature_scale(deltas: tuple, inputs: tuple, eta: Array) -> Array:
    """1/(1 + η_t ρ_t) per token, ρ_t = Σ_l ‖δ_l‖² ‖a_l‖² / ‖e_t‖² (`gradient_curvature` of the
    outer-product gradients G_l = δ_l a_lᵀ; the last layer's δ is the output error e_t). [C]."""
    g2 = sum(jnp.sum(jnp.square(d), -1) * jnp.sum(jnp.square(a), -1)
             for d, a in zip(deltas, inputs))
    e2 = jnp.sum(jnp.square(deltas[-1]), -1)
    rho = jnp.where(e2 > 0, g2 / jnp.where(e2 > 0, e2, 1.0), 0.0)
    return 1.0 / (1.0 + eta * rho)


def _rescale_preconditioner(prep: ChunkPrep, scale: Array, c: int) -> ChunkPrep:
    """The DGD terms with p_t → p_t · scale_t (this memory's curvature-normalised η'_t), and the
    inverse of their triangular system rebuilt for them."""
    co = prep.coeffs
    weights = co.precond_weights * scale[None, :]
    inverse = unit_lower_inverse(weights[:c] * prep.kk)
    return prep._replace(coeffs=co._replace(precond_weights=weights), system_inverse=inverse)


def _dgd_base(w0: Array, s0: Array | None, k: Array, prep: ChunkPrep,
              a0: Array | None = None) -> Array:
    """(I + L)⁻¹ B⁰: the part of the DGD predictions U that does not depend on the chunk's
    gradient steps; a0: the retention anchor of the input-side layer, or None. [C, out]."""
    co = prep.coeffs
    c = k.shape[0]
    rhs = co.decay[:c, None] * (k @ w0.T)
    if a0 is not None:  # Σ_s P_α[t, s](1 − α_s) W_init = (1 − ᾱ_t) W_init
        rhs = rhs + (1.0 - co.decay[:c, None]) * (k @ a0.T)
    if s0 is not None:
        rhs = rhs + co.carry[:c, None] * (k @ s0.T)
    return prep.system_inverse @ rhs


def _dgd_predictions(base: Array, d0: Array, prep: ChunkPrep) -> Array:
    """U = [W_{t−1} k_t]_t for the input-side layer (whose inputs are the keys), from the
    triangular system above: `_dgd_base` minus the steps' part. [C, out]."""
    c = d0.shape[0]
    return base - prep.system_inverse @ ((prep.coeffs.grad_weights[:c] * prep.kk) @ d0)


class _ChunkTerms(NamedTuple):
    """The terms of one chunk's reads and writes (one head), per layer l (None where absent).

    run, s, a: running memory, momentum and retention anchor at the chunk start;
    deltas, inputs: δ_l and a_l of the snapshot forward/backward on the keys;
    u: the DGD predictions U of the input-side layer, or None;
    live_run: the running memory before D8's stop-gradient (differs from `run` only then).
    """

    run: tuple
    s: tuple
    a: tuple
    deltas: tuple
    inputs: tuple
    u: Array | None
    live_run: tuple
    stop_writes: bool


def _snapshot_errors(memory: MLPMemory, objective: Objective, spec: RecurrenceSpec, snap: tuple,
                     k: Array, v: Array, prep: ChunkPrep):
    """(δ_l, a_l, prep, step) at the snapshot: the raw δ_l, and with the curvature-normalised
    step its per-token factor 1/(1 + η_t ρ_t) for the gradient step (else None); the DGD system
    in prep carries the same factor."""
    # Snapshot forward/backward on the keys: a_l (layer inputs) and δ_l (output-side errors).
    y_k, cache = memory.forward_cached(snap, k)
    deltas = memory.backward(snap, cache, objective.error(y_k, v))
    step = None
    if prep.curvature_eta is not None:  # η_t → η_t/(1 + η_t ρ_t) with this memory's ρ_t
        scale = curvature_scale(deltas, cache.inputs, prep.curvature_eta)
        if spec.dgd and spec.dgd_curvature:  # the DGD term's p (its system is per memory)
            prep = _rescale_preconditioner(prep, scale, k.shape[0])
        if spec.step_curvature:
            step = scale
    return deltas, cache.inputs, prep, step


def _remaining_error(run: tuple, s: tuple, a: tuple, snap: tuple, deltas: tuple, inputs: tuple,
                     k: Array, prep: ChunkPrep, step: Array, dgd_base: Array | None) -> Array:
    """μ_t = 1 + ⟨g_t, W_{t−1} − W_snap⟩/‖e_t‖² for every token of the chunk at once [C]
    (`inner_optimizers.remaining_error_fraction`, docs/hope.md "Chunk-causal curvature step").

    ⟨g_t, ΔW⟩ = Σ_l δ_l,tᵀ ΔW_l a_l,t, and W_{t−1} a_l,t is the pre-write dual-form read of layer l
    at its own input. Its part that does not depend on the chunk's steps gives b_t; the steps
    enter linearly, token s's gradient with weight step_s μ_s, directly (c_G) and through the DGD
    predictions U (u_s = W_{s−1} k_s), both strictly causal: μ = 1 + b − M μ with M strictly lower
    triangular, one triangular solve. dgd_base: `_dgd_base` of the chunk, or None without DGD.
    """
    co = prep.coeffs
    c = k.shape[0]
    e2 = jnp.sum(jnp.square(deltas[-1]), -1)
    b = jnp.zeros((c,), k.dtype)
    m = jnp.zeros((c, c), k.dtype)
    for l in range(len(run)):
        x, d = inputs[l], deltas[l]
        # (W_{t−1} − W_snap) x without the chunk's steps
        rel = co.decay[:c, None] * (x @ run[l].T) - x @ snap[l].T
        if a[l] is not None:
            rel = rel + (1.0 - co.decay[:c, None]) * (x @ a[l].T)
        if s[l] is not None:
            rel = rel + co.carry[:c, None] * (x @ s[l].T)
        b = b + jnp.sum(d * rel, -1)
        m = m + co.grad_weights[:c] * (x @ x.T) * (d @ d.T)  # −Σ_s c_G[t−1, s] (a·a)(δ·δ) μ_s
    if dgd_base is not None:  # −Σ_r c_U[t−1, r] (k_t·k_r) δ_0,t·u_r,
        # U = (I + L)⁻¹ (B⁰ − (c_G ∘ kkᵀ) Δ)
        d0 = deltas[0]
        reads = co.precond_weights[:c] * prep.kk
        b = b - jnp.sum(reads * (d0 @ dgd_base.T), -1)
        through = reads @ (prep.system_inverse @ (co.grad_weights[:c] * prep.kk))
        m = m - through * (d0 @ d0.T)
    safe = jnp.where(e2 > 0, e2, 1.0)[:, None]
    m = jnp.where(e2[:, None] > 0, m * step[None, :] / safe, 0.0)
    b = jnp.where(e2 > 0, b / safe[:, 0], 0.0)
    # (I + tril(m, −1)) μ = 1 + b (m's diagonal and upper part are not used)
    return unit_lower_solve(m, ((1.0 + b)[:, None],))[0][:, 0]


def _read_layer(terms: _ChunkTerms, prep: ChunkPrep, l: int, x: Array, rows: slice) -> Array:
    """W_t x_t of layer l in dual form for the rows' running states (module docstring)."""
    co = prep.coeffs
    run, s, a = terms.run, terms.s, terms.a
    z = co.decay[rows, None] * (x @ run[l].T)
    if a[l] is not None:
        z = z + (1.0 - co.decay[rows, None]) * (x @ a[l].T)
    if s[l] is not None:
        z = z + co.carry[rows, None] * (x @ s[l].T)
    scores = prep.qk if l == 0 else x @ terms.inputs[l].T
    z = z - (co.grad_weights[rows] * scores) @ terms.deltas[l]
    if terms.u is not None and l == 0:
        z = z - (co.precond_weights[rows] * scores) @ terms.u
    if terms.stop_writes:
        z = z + x @ (terms.live_run[l] - run[l]).T  # zero value; gradient of the read w.r.t. W_0
    return z


def _read(memory: MLPMemory, read: str, terms: _ChunkTerms, prep: ChunkPrep, snap: tuple,
          q: Array) -> Array | None:
    """The chunk's outputs y [C, d_out] for the read mode (None for "none")."""
    if read == "none":  # a write-only level (e.g. the k/v/η/α memories of self-modifying Titans)
        return None
    if read == "snapshot":
        base = (snap if not terms.stop_writes
                else tuple(w + (lw - sg(lw)) for w, lw in zip(snap, terms.live_run)))
        return memory.apply(base, q)
    c = q.shape[0]
    n_layers = len(terms.run)
    rows = slice(1, c + 1) if read == "post" else slice(0, c)
    x = q
    for l in range(n_layers):
        z = _read_layer(terms, prep, l, x, rows)
        x = memory.activation(z) if l < n_layers - 1 else z
    return q + x if memory.residual else x


def _end_of_chunk(terms: _ChunkTerms, prep: ChunkPrep, k: Array) -> tuple[tuple, tuple]:
    """The running memory and momentum after the chunk (row C of the coefficients)."""
    co = prep.coeffs
    c = k.shape[0]
    run, s, a, deltas, inputs, u = (terms.run, terms.s, terms.a, terms.deltas, terms.inputs,
                                    terms.u)
    new_run, new_mom = [], []
    for l in range(len(run)):
        w = co.decay[c] * run[l] - (deltas[l] * co.grad_weights[c][:, None]).T @ inputs[l]
        if a[l] is not None:
            w = w + (1.0 - co.decay[c]) * a[l]
        if s[l] is not None:
            w = w + co.carry[c] * s[l]
            new_mom.append(co.momentum_decay * s[l]
                           - (deltas[l] * co.momentum_grad_weights[:, None]).T @ inputs[l])
        if u is not None and l == 0:
            w = w - (u * co.precond_weights[c][:, None]).T @ k
        if terms.stop_writes:
            w = w + (terms.live_run[l] - run[l])  # gradient identity to W_0 through the state
        new_run.append(w)
    return tuple(new_run), tuple(new_mom)


def closed_form_chunk(memory: MLPMemory, objective: Objective, spec: RecurrenceSpec, read: str,
                      stop_writes: bool, run: tuple, momentum: tuple | None, snap: tuple,
                      q: Array, k: Array, v: Array, prep: ChunkPrep, anchor: tuple | None = None):
    """Reads and writes of one chunk for one head of one sequence.

    Args:
      run: running memory at the chunk start, tuple of [out_l, in_l].
      momentum: momentum buffers S (like `run`), or None without momentum.
      snap: the snapshot `M_{ξ}` at which this chunk's gradients are taken (D2).
      q, k: [C, d_in]; v: [C, d_out]; prep: `prepare_chunk` of this chunk.
      stop_writes: D8's stop-gradient mode (writes are constants; reads stay differentiable).
      anchor: the initial memory that retention decays toward (like `run`), or None for decay
        toward 0: W_t = ᾱ_t W_0 + (1 − ᾱ_t) W_init + … (`add_retention(to_init=True)`).

    Returns:
      (y [C, d_out], new running memory, new momentum or None).
    """
    live_run = run
    if stop_writes:
        run, snap, k, v = sg(run), sg(snap), sg(k), sg(v)
        momentum = None if momentum is None else sg(momentum)
        anchor = None if anchor is None else sg(anchor)
    deltas, inputs, prep, step = _snapshot_errors(memory, objective, spec, snap, k, v, prep)
    n_layers = len(run)
    s = momentum if momentum is not None else (None,) * n_layers
    a = anchor if anchor is not None else (None,) * n_layers
    dgd_base = _dgd_base(run[0], s[0], k, prep, a[0]) if spec.dgd else None
    if step is not None:  # the curvature step: fold η'_t/η_t (× μ_t, chunk-causal) into δ_t
        if spec.step_chunk_causal:
            step = step * _remaining_error(run, s, a, snap, deltas, inputs, k, prep, step,
                                           dgd_base)
        deltas = tuple(d * step[:, None] for d in deltas)
    u = None if dgd_base is None else _dgd_predictions(dgd_base, deltas[0], prep)
    terms = _ChunkTerms(run, s, a, deltas, inputs, u, live_run, stop_writes)
    y = _read(memory, read, terms, prep, snap, q)
    new_run, new_mom = _end_of_chunk(terms, prep, k)
    return y, new_run, (new_mom if momentum is not None else None)
