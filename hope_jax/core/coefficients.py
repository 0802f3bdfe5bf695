"""Scalar coefficients of one chunk's writes: retention and momentum as linear recurrences.

Inside a chunk of C tokens (1-based t = 1..C, index 0 = the chunk start) one layer of the memory
follows the canonical write (see `inner_optimizers.py`)

    S_t = β_t S_{t−1} − η_t G_t,        W_t = W_{t−1}(α_t I − p_t k_t k_tᵀ) + m_t S_t,

with snapshot gradients `G_i = δ_i a_iᵀ` (D2) and a write mask m (0 at right-padding, D35).
Unrolling the scalar parts (Titans Eqs. 16–18, design §3.4) gives, with
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

    g: [C] per-token factors (≥ 0). Returns [C+1, C+1], as one fused elementwise map of two
    cumulative sums (a [C+1, C+1] cumulative product costs far more on CPU):
    P[t, s] = exp(L_t − L_s), L_t = Σ_{j≤t} log g_j over the nonzero g_j, and P[t, s] = 0 exactly
    when a zero factor lies in (s, t] (counted by an integer cumulative sum, so exact zeros need no
    log 0). Values are exact to rounding; the derivative w.r.t. a factor that is exactly 0 is
    taken as 0 (the true one, the product of the others, only matters at an exactly zero gate).
    """
    zero = g == 0
    logs = jnp.log(jnp.where(zero, jnp.ones((), g.dtype), g))
    cum = jnp.concatenate([jnp.zeros((1,), g.dtype), jnp.cumsum(logs)])
    zeros = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(zero.astype(jnp.int32))])
    idx = jnp.arange(g.shape[0] + 1)
    keep = (idx[:, None] >= idx[None, :]) & (zeros[:, None] == zeros[None, :])
    diff = jnp.where(keep, cum[:, None] - cum[None, :], jnp.zeros((), g.dtype))
    return jnp.where(keep, jnp.exp(diff), jnp.zeros((), g.dtype))


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _unit_lower_inverse_blocked(strict: Array, base: int) -> Array:
    """(I + S)⁻¹ for S strictly lower triangular [..., n, n], by matmuls only (exact algebra).

    S is zero-padded to a power of two m (the inverse of a block-diagonal matrix with an identity
    block is exact). Diagonal blocks of width b = min(m, base) are inverted with the nilpotent
    series (I + N)(I + N²)(I + N⁴)···(I + N^{b/2}) = Σ_{i<b} Nⁱ, N = −S_block; neighbouring blocks
    are then merged log₂(m/b) times with [[A, 0], [B, D]]⁻¹ = [[A⁻¹, 0], [−D⁻¹ B A⁻¹, D⁻¹]].
    """
    n = strict.shape[-1]
    lead = strict.shape[:-2]
    m = _next_pow2(n)
    s = jnp.tril(strict, -1)
    if m != n:
        s = jnp.pad(s, [(0, 0)] * len(lead) + [(0, m - n), (0, m - n)])
    b = min(m, base)

    def blocks(width: int, row_offset: int) -> Array:
        """[..., m/width − row_offset ..., width, width]: block (i + row_offset, i) of S for the
        block pairs i = 0, 2, 4, ... when row_offset = 1, the diagonal blocks when 0."""
        nb = m // width
        sb = s.reshape(lead + (nb, width, nb, width))
        if row_offset == 0:
            idx = range(nb)
            return jnp.stack([sb[..., i, :, i, :] for i in idx], axis=-3)
        return jnp.stack([sb[..., i + 1, :, i, :] for i in range(0, nb, 2)], axis=-3)

    neg = -blocks(b, 0)  # N = −S on the diagonal blocks, [..., m/b, b, b]
    eye = jnp.eye(b, dtype=s.dtype)
    inv = eye + neg
    power = neg
    width = 2
    while width < b:  # inv = Σ_{i<2·width} Nⁱ after each step
        power = power @ power
        inv = inv + inv @ power
        width *= 2
    width = b
    while width < m:  # merge block pairs: width → 2·width
        a_inv, d_inv = inv[..., 0::2, :, :], inv[..., 1::2, :, :]
        lower = -(d_inv @ blocks(width, 1)) @ a_inv
        zero = jnp.zeros_like(a_inv)
        top = jnp.concatenate([a_inv, zero], axis=-1)
        bottom = jnp.concatenate([lower, d_inv], axis=-1)
        inv = jnp.concatenate([top, bottom], axis=-2)
        width *= 2
    inv = inv.reshape(lead + (m, m))
    return inv[..., :n, :n] if m != n else inv


@jax.custom_jvp
def unit_lower_inverse(strict: Array) -> Array:
    """(I + S)⁻¹ for a strictly lower triangular S [..., n, n] (entries on and above the diagonal
    are ignored, as `solve_triangular(I + S, I, lower=True, unit_diagonal=True)` does).

    Computed by matmuls in blocks (`_unit_lower_inverse_blocked`), several times faster than a
    triangular solve on CPU. Its derivative is written out, dX = −X tril(dS, −1) X (two matmuls;
    reverse mode transposes it to dS = −tril(Xᵀ dX Xᵀ, −1)), so the blocked forward is never
    differentiated through.
    """
    return _unit_lower_inverse_blocked(strict, 16)


@unit_lower_inverse.defjvp
def _unit_lower_inverse_jvp(primals, tangents):
    (strict,), (d_strict,) = primals, tangents
    inv = unit_lower_inverse(strict)
    return inv, -(inv @ jnp.tril(d_strict, -1)) @ inv


@jax.custom_jvp
def unit_lower_solve(strict: Array, rhs: tuple[Array, ...]) -> tuple[Array, ...]:
    """(I + S)⁻¹ B for each B in `rhs` ([..., n, m_i]), S strictly lower triangular [..., n, n].

    The derivative is written in terms of the outputs Z = (I + S)⁻¹ B:
    dZ = (I + S)⁻¹ (dB − tril(dS, −1) Z), whose transpose needs one product per right-hand side
    for B's cotangent U = (I + S)⁻ᵀ dZ and one for S's, dS = −tril(Σ U Zᵀ, −1): two fewer [n, n]
    products than differentiating the inverse itself (`unit_lower_inverse`) and then B ↦ X B.
    """
    inv = _unit_lower_inverse_blocked(strict, 16)
    return tuple(inv @ b for b in rhs)


@unit_lower_solve.defjvp
def _unit_lower_solve_jvp(primals, tangents):
    (strict, rhs), (d_strict, d_rhs) = primals, tangents
    inv = _unit_lower_inverse_blocked(strict, 16)
    outs = tuple(inv @ b for b in rhs)
    d_lower = jnp.tril(d_strict, -1)
    return outs, tuple(inv @ (db - d_lower @ z) for db, z in zip(d_rhs, outs))


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
