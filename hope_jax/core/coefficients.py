"""Scalar coefficients of one chunk's writes: retention and momentum as linear recurrences.

Inside a chunk of C tokens (1-based t = 1..C, index 0 = the chunk start) one layer of the memory
follows the canonical write (see `inner_optimizers.py`)

    S_t = β_t S_{t−1} − η_t G_t,        W_t = W_{t−1}(α_t I − p_t k_t k_tᵀ) + m_t S_t,

with snapshot gradients `G_i = δ_i a_iᵀ` (D2) and a write mask m (0 at right-padding, D35).
Unrolling the scalar parts (Titans Eqs. 16–18, spec §3.4) gives, with
`P_α[t, s] = Π_{j=s+1}^{t} α_j` (products taken directly, never as ratios of cumulative
products, so gates of exactly 0 are safe):

    W_t = ᾱ_t W_0 + κ_t S_0 − Σ_i c_G[t, i] δ_i a_iᵀ − Σ_s c_U[t, s] u_s k_sᵀ,   u_s = W_{s−1} k_s
    ᾱ_t = P_α[t, 0]
    κ_t = Σ_s P_α[t, s] m_s P_β[s, 0]
    c_G[t, i] = η_i Σ_{s=i}^{t} P_α[t, s] m_s P_β[s, i]        (= η_i P_α[t, i] without momentum)
    c_U[t, s] = P_α[t, s] p_s                                   (DGD preconditioner terms)

and for the momentum itself `S_C = P_β[C, 0] S_0 − Σ_i η_i P_β[C, i] δ_i a_iᵀ`.
Rows t = 0..C are kept so that pre-write reads (row t−1) and post-write reads (row t) slice the
same matrices.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def decay_matrix(g: Array) -> Array:
    """P[t, s] = Π_{j=s+1}^{t} g_j for 0 ≤ s ≤ t ≤ C (token j at index j), 0 above the diagonal.

    g: [C] per-token factors. Returns [C+1, C+1]. Built with a cumulative product down the
    columns of a masked matrix, which is exact and differentiable at g_j = 0.
    """
    c = g.shape[0]
    padded = jnp.concatenate([jnp.ones((1,), g.dtype), g])
    idx = jnp.arange(c + 1)
    below = idx[:, None] > idx[None, :]
    factors = jnp.where(below, padded[:, None], jnp.ones((), g.dtype))
    products = jnp.cumprod(factors, axis=0)
    return jnp.where(idx[:, None] >= idx[None, :], products, jnp.zeros((), g.dtype))


class ChunkCoefficients(NamedTuple):
    """Coefficients of one chunk (rows t = 0..C, columns i = token index 0..C−1).

    decay: ᾱ_t [C+1].
    carry: κ_t [C+1] (None without momentum).
    grad_weights: c_G[t, i] [C+1, C], η already folded in.
    precond_weights: c_U[t, s] [C+1, C] (None without DGD).
    momentum_decay: P_β[C, 0] [] (None without momentum).
    momentum_grad_weights: η_i P_β[C, i] [C] (None without momentum).
    """

    decay: Array
    carry: Array | None
    grad_weights: Array
    precond_weights: Array | None
    momentum_decay: Array | None
    momentum_grad_weights: Array | None


def chunk_coefficients(eta: Array, alpha: Array, beta: Array | None, precond: Array | None,
                       write_mask: Array | None) -> ChunkCoefficients:
    """Coefficients of the canonical write over one chunk.

    eta: [C] effective step sizes η_t (normalised and masked already).
    alpha: [C] retention α_t (1 at padded tokens).
    beta: [C] momentum decay β_t (1 at padded tokens), or None without momentum.
    precond: [C] DGD coefficients p_t (0 at padded tokens), or None without DGD.
    write_mask: [C] m_t, or None when every token is real.
    """
    p_alpha = decay_matrix(alpha)
    decay = p_alpha[:, 0]
    weights_from = p_alpha[:, 1:]  # [C+1, C]: P_α[t, s] for s = 1..C
    if beta is None:
        carry = momentum_decay = momentum_grad_weights = None
        grad_weights = weights_from * eta[None, :]
    else:
        p_beta = decay_matrix(beta)
        masked = weights_from if write_mask is None else weights_from * write_mask[None, :]
        carry = masked @ p_beta[1:, 0]
        grad_weights = (masked @ p_beta[1:, 1:]) * eta[None, :]
        momentum_decay = p_beta[-1, 0]
        momentum_grad_weights = eta * p_beta[-1, 1:]
    precond_weights = None if precond is None else weights_from * precond[None, :]
    return ChunkCoefficients(decay, carry, grad_weights, precond_weights, momentum_decay,
                             momentum_grad_weights)
