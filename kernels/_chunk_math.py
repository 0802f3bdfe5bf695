"""In-kernel math of one chunk, shared by the TPU (Mosaic) and GPU (Triton) Pallas kernels.

Everything here acts on values already loaded from refs, in float32, for one head of one sequence
and one chunk of C tokens (0-based token index t = 0..C−1 inside the chunk). It restates the core's
closed form (`hope_jax.core.coefficients`, `closed_form`, `linear_chunk`) in a shape that lowers to
both backends:

* no cumsum / cumprod / sort / reverse (Mosaic TPU cannot lower them): the decay products
  `P[t, s] = Π_{j=s+1}^{t} g_j` come from log-gates summed against triangular masks
  (`exp(Σ_{j≤t} log g_j − Σ_{j≤s} log g_j)`), built in both orientations so that no transpose of
  a small vector is ever needed;
* no matvec with a dimension of 1 on the MXU / tensor cores (Triton's `dot` needs every dimension
  ≥ 16): reductions of broadcast products instead;
* the unit lower-triangular DGD system `(I + L) U = B` of the WY/UT form is solved by forward
  substitution in a `fori_loop` over the rows with masked selects (no dynamic indexing).

Gates arrive pre-processed by `hope_jax.core.closed_form.effective_gates` (padding frozen, D35) as
log-retention / log-momentum-decay (clamped at log 1e-30 so that a gate of exactly 0 stays finite),
effective step sizes η_e, DGD coefficients p and the write mask m, each in a column [C, 1] and a
row [1, C] layout.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
F32 = jnp.float32
LOG_FLOOR = -69.0  # log(1e-30): gates of exactly 0 are read as 1e-30


def mm(a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False) -> Array:
    """a @ b (or with a / b transposed) in float32 at full precision (no TF32 / bf16 passes)."""
    ca = 0 if trans_a else 1
    cb = 1 if trans_b else 0
    return lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), precision=lax.Precision.HIGHEST,
                           preferred_element_type=F32)


def _iota(shape: tuple[int, int], dim: int) -> Array:
    return lax.broadcasted_iota(jnp.int32, shape, dim)


def row_sum(row: Array, m: int) -> Array:
    """Σ_j row[0, j] repeated down a column [m, 1], from a row [1, C].

    Every per-chunk scalar that multiplies a matrix (Π_j α_j, κ_C, …) is formed this way, as an
    [m, 1] column, never as a [1, 1] array broadcast to [m, n]: the VJP of a broadcast from an
    all-ones shape reduces over both axes at once, and Triton's lowering of a two-axis
    `reduce_sum` fails on jax 0.12 when lowering on a CPU host (under the abstract GPU mesh it keeps
    the 2-d sharding on the 1-d intermediate). Here every reduction is over one axis.
    """
    return jnp.sum(jnp.broadcast_to(row, (m, row.shape[1])), axis=1, keepdims=True)


def col_sum(col: Array, n: int) -> Array:
    """Σ_i col[i, 0] repeated along a row [1, n], from a column [C, 1] (see `row_sum`)."""
    return jnp.sum(jnp.broadcast_to(col, (col.shape[0], n)), axis=0, keepdims=True)


class Decay(NamedTuple):
    """Products of one chunk's per-token factors g (retention α or momentum decay β).

    post[t, s]   = Π_{j=s+1}^{t} g_j for s ≤ t (1 on the diagonal), else 0        [C, C]
    post_t[i, s] = post[s, i] (the transpose, built directly)                      [C, C]
    pre[t, s]    = Π_{j=s+1}^{t−1} g_j for s < t, else 0   (rows of pre-write reads) [C, C]
    pre_t[s, t]  = pre[t, s]                                                       [C, C]
    lead_post[t] = Π_{j≤t} g_j;  lead_pre[t] = Π_{j<t} g_j                          [C, 1]
    lead_row[s]  = Π_{j≤s} g_j                                                     [1, C]
    end_col[s]   = Π_{j=s+1}^{C−1} g_j (the chunk end's row); end_row the same     [C, 1], [1, C]
    log_row      = log g_j (the input), for `total`
    """

    post: Array
    post_t: Array
    pre: Array
    pre_t: Array
    lead_post: Array
    lead_pre: Array
    lead_row: Array
    end_col: Array
    end_row: Array
    log_row: Array

    def total(self, m: int) -> Array:
        """Π_j g_j as a column [m, 1] (to scale an [m, n] matrix; see `row_sum`)."""
        return jnp.exp(row_sum(self.log_row, m))


def decay_factors(log_col: Array, log_row: Array) -> Decay:
    """All products of a chunk's factors from log g in column [C, 1] and row [1, C] layout.

    Design §3.4: ratios of cumulative products are never formed; the products are sums of logs over
    a triangular mask, exponentiated, so a factor of 0 (clamped) cannot produce 0/0.
    """
    c = log_col.shape[0]
    r, s = _iota((c, c), 0), _iota((c, c), 1)
    zero = jnp.zeros((), F32)
    cum_col = jnp.sum(jnp.where(s <= r, log_row, zero), axis=1, keepdims=True)  # Σ_{j≤t} [C,1]
    cum_row = jnp.sum(jnp.where(r <= s, log_col, zero), axis=0, keepdims=True)  # Σ_{j≤s} [1,C]
    cumx_col = cum_col - log_col  # Σ_{j<t}
    cumx_row = cum_row - log_row
    total_col = row_sum(log_row, c)  # Σ_j [C, 1]
    total_row = col_sum(log_col, c)  # Σ_j [1, C]

    def masked_exp(mask, x):
        return jnp.where(mask, jnp.exp(jnp.where(mask, x, zero)), zero)

    return Decay(
        post=masked_exp(s <= r, cum_col - cum_row),
        post_t=masked_exp(r <= s, cum_row - cum_col),
        pre=masked_exp(s < r, cumx_col - cum_row),
        pre_t=masked_exp(r < s, cumx_row - cum_col),
        lead_post=jnp.exp(cum_col),
        lead_pre=jnp.exp(cumx_col),
        lead_row=jnp.exp(cum_row),
        end_col=jnp.exp(total_col - cum_col),
        end_row=jnp.exp(total_row - cum_row),
        log_row=log_row,
    )


def unit_lower_solve(l_t: Array, b: Array) -> Array:
    """U with (I + L) U = B, L strictly lower triangular, given Lᵀ [C, C] and B [C, n].

    Forward substitution (backward stable, like `solve_triangular` in the core): row t is
    U_t = B_t − Σ_{s<t} L[t, s] U_s, computed with masked reductions so the loop index is only ever
    compared, never used to index (Mosaic and Triton both lower this).
    """
    c = l_t.shape[0]
    rows = _iota((c, 1), 0)
    cols = _iota((1, c), 1)
    zero = jnp.zeros((), F32)

    def row(t, u):
        l_col = jnp.sum(jnp.where(cols == t, l_t, zero), axis=1, keepdims=True)  # L[t, :] [C,1]
        r = jnp.sum(l_col * u, axis=0, keepdims=True)  # [1, n]
        return jnp.where(rows == t, u - r, u)

    return lax.fori_loop(1, c, row, b)


def unit_upper_solve(l: Array, g: Array) -> Array:
    """X with (I + L)ᵀ X = G, L strictly lower triangular [C, C], G [C, n].

    Back substitution, row t = C−1 … 0: X_t = G_t − Σ_{s>t} L[s, t] X_s (column t of L by a masked
    reduction, as in `unit_lower_solve`; the loop index is only compared).
    """
    c = l.shape[0]
    rows = _iota((c, 1), 0)
    cols = _iota((1, c), 1)
    zero = jnp.zeros((), F32)

    def row(i, x):
        t = c - 1 - i
        l_col = jnp.sum(jnp.where(cols == t, l, zero), axis=1, keepdims=True)  # L[:, t] [C,1]
        r = jnp.sum(l_col * x, axis=0, keepdims=True)  # [1, n]
        return jnp.where(rows == t, x - r, x)

    return lax.fori_loop(1, c, row, g)


@jax.custom_vjp
def unit_lower_solve_diff(l: Array, l_t: Array, b: Array) -> Array:
    """`unit_lower_solve(l_t, b)` with a hand-written VJP (for the backward kernels' recompute).

    Given L and Lᵀ (both orientations, so no in-kernel transpose is needed), U = (I + L)⁻¹ B and

        dB = (I + L)⁻ᵀ dU   (back substitution, `unit_upper_solve`),   dL = −tril(dB Uᵀ, −1)

    (all of dL is returned for `l`, none for `l_t`). Autodiff of the forward substitution's
    `fori_loop` would need a reverse loop over stored rows, which Mosaic / Triton do not lower.
    """
    del l
    return unit_lower_solve(l_t, b)


def _solve_fwd(l: Array, l_t: Array, b: Array):
    u = unit_lower_solve(l_t, b)
    return u, (l, u)


def _solve_bwd(res, du: Array):
    l, u = res
    db = unit_upper_solve(l, du)
    c = l.shape[0]
    strict = _iota((c, c), 1) < _iota((c, c), 0)
    dl = jnp.where(strict, -mm(db, u, trans_b=True), jnp.zeros((), F32))
    return dl, jnp.zeros_like(l), db


unit_lower_solve_diff.defvjp(_solve_fwd, _solve_bwd)


def linear_chunk_values(q: Array, k: Array, v: Array, log_alpha: tuple[Array, Array],
                        eta: tuple[Array, Array], p: tuple[Array, Array] | None, w: Array, *,
                        affine: float, read: str, differentiable: bool = False
                        ) -> tuple[Array, Array]:
    """One chunk of the linear memory `M(k) = W k` with retention and (optionally) DGD.

    Write (design §6.4–6.5, Eqs. 88, 93): `W_t = W_{t−1}(α_t I − p_t k_t k_tᵀ) − η_t e_t k_tᵀ` with
    the snapshot error `e_t = c·W_0 k_t − v_t` (c = 1 for L2, 0 for the dot objective). Closed form:

        W_t = ᾱ_t W_0 − Σ_i η_i P_α[t, i] e_i k_iᵀ − Σ_s p_s P_α[t, s] u_s k_sᵀ,
        u_s = W_{s−1} k_s,
        (I + L) U = B,  L[t, s] = P_α[t−1, s] p_s (k_s·k_t),
        B_t = ᾱ_{t−1} W_0 k_t − Σ_{i<t} η_i P_α[t−1, i] (k_i·k_t) e_i     (WY/UT form).

    Args:
      q, k: [C, d_k]; v: [C, d_v] (a block of value rows: the rows of W evolve independently).
      log_alpha, eta, p: (column [C, 1], row [1, C]) pairs; p is None without DGD.
      w: the running (= snapshot, chunk-aligned) state W_0 [d_v, d_k].
      affine: c of the objective's error; read: "post", "pre" or "snapshot".
      differentiable: solve the DGD system with `unit_lower_solve_diff` (hand-written VJP), so
        that `jax.vjp` of this function lowers inside a backward kernel.

    Returns:
      (y [C, d_v], W_C [d_v, d_k]).
    """
    a = decay_factors(*log_alpha)
    eta_c, eta_r = eta
    kw = mm(k, w, trans_b=True)  # [C, d_v] = K W_0ᵀ
    e = affine * kw - v if affine else -v
    u = None
    if p is not None:
        p_c, p_r = p
        kk = mm(k, k, trans_b=True)  # symmetric
        b = a.lead_pre * kw - mm(a.pre * eta_r * kk, e)
        l_t = a.pre_t * p_c * kk
        if differentiable:
            u = unit_lower_solve_diff(a.pre * p_r * kk, l_t, b)
        else:
            u = unit_lower_solve(l_t, b)
    if read == "snapshot":
        y = mm(q, w, trans_b=True)
    else:
        d, lead = (a.post, a.lead_post) if read == "post" else (a.pre, a.lead_pre)
        qk = mm(q, k, trans_b=True)
        y = lead * mm(q, w, trans_b=True) - mm(d * eta_r * qk, e)
        if u is not None:
            y = y - mm(d * p_r * qk, u)
    upd = e * (eta_c * a.end_col)
    if u is not None:
        upd = upd + u * (p_c * a.end_col)
    w_new = a.total(w.shape[0]) * w - mm(upd, k, trans_a=True)
    return y, w_new


def _mlp_snapshot(k: Array, v: Array, w_in: Array, w_out: Array, affine: float,
                  activation: Callable[[Array], Array]):
    """Snapshot forward / backward on the keys (design §3.1): (z = W_in k [C, h], a = σ(z),
    δ_out = e [C, d], δ_in [C, h])."""
    z = mm(k, w_in, trans_b=True)  # [C, h]
    act, dact = jax.jvp(activation, (z,), (jnp.ones_like(z),))
    y_k = k + mm(act, w_out, trans_b=True)
    e = affine * y_k - v if affine else -v  # δ_out [C, d]
    d_in = dact * mm(e, w_out)  # δ_in [C, h]
    return z, act, e, d_in


def _mlp_weights(d_alpha: Array, bt: Decay, eta_r: Array, m_r: Array) -> tuple[Array, Array]:
    """(c_G [C, C], κ [C, 1]) of the reads whose retention products are `d_alpha`."""
    masked = d_alpha * m_r
    return mm(masked, bt.post) * eta_r, jnp.sum(masked * bt.lead_row, axis=1, keepdims=True)


def _mlp_dgd_predictions(k: Array, z: Array, s_in: Array, d_in: Array, a: Decay, bt: Decay,
                         eta_r: Array, m_r: Array, p: tuple[Array, Array],
                         differentiable: bool) -> Array:
    """DGD predictions u_t = W_in,{t−1} k_t (WY/UT form) [C, h]."""
    p_c, p_r = p
    kk = mm(k, k, trans_b=True)
    c_pre, kappa_pre = _mlp_weights(a.pre, bt, eta_r, m_r)
    b = a.lead_pre * z + kappa_pre * mm(k, s_in, trans_b=True) - mm(c_pre * kk, d_in)
    l_t = a.pre_t * p_c * kk
    if differentiable:
        return unit_lower_solve_diff(a.pre * p_r * kk, l_t, b)
    return unit_lower_solve(l_t, b)


def _mlp_read(q: Array, k: Array, state: tuple, act: Array, e: Array, d_in: Array,
              u: Array | None, a: Decay, bt: Decay, eta_r: Array, m_r: Array,
              p_r: Array | None, read: str, activation: Callable[[Array], Array]) -> Array:
    """y [C, d]: the snapshot, or the running pre-/post-write states in dual form (D2)."""
    w_in, w_out, s_in, s_out = state
    if read == "snapshot":
        return q + mm(activation(mm(q, w_in, trans_b=True)), w_out, trans_b=True)
    d, lead = (a.post, a.lead_post) if read == "post" else (a.pre, a.lead_pre)
    c_g, kappa = _mlp_weights(d, bt, eta_r, m_r)
    qk = mm(q, k, trans_b=True)
    z_in = lead * mm(q, w_in, trans_b=True) + kappa * mm(q, s_in, trans_b=True)
    z_in = z_in - mm(c_g * qk, d_in)
    if u is not None:
        z_in = z_in - mm(d * p_r * qk, u)
    h = activation(z_in)
    ha = mm(h, act, trans_b=True)  # [C, C] scores h_t · a_i of the output layer
    z_out = lead * mm(h, w_out, trans_b=True) + kappa * mm(h, s_out, trans_b=True)
    return q + z_out - mm(c_g * ha, e)


def _mlp_end_state(k: Array, state: tuple, act: Array, e: Array, d_in: Array, u: Array | None,
                   a: Decay, bt: Decay, eta_c: Array, p_c: Array | None, c_end: Array,
                   kappa_row: Array) -> tuple[Array, Array, Array, Array]:
    """(W_in, W_out, S_in, S_out) at the chunk end."""
    w_in, w_out, s_in, s_out = state
    upd_in = d_in * c_end
    if u is not None:
        upd_in = upd_in + u * (p_c * a.end_col)
    mg = eta_c * bt.end_col  # η_i P_β[C, i] [C, 1]
    n_h, n_d = w_in.shape
    new_w_in = (a.total(n_h) * w_in + row_sum(kappa_row, n_h) * s_in
                - mm(upd_in, k, trans_a=True))
    new_w_out = (a.total(n_d) * w_out + row_sum(kappa_row, n_d) * s_out
                 - mm(e * c_end, act, trans_a=True))
    new_s_in = bt.total(n_h) * s_in - mm(d_in * mg, k, trans_a=True)
    new_s_out = bt.total(n_d) * s_out - mm(e * mg, act, trans_a=True)
    return new_w_in, new_w_out, new_s_in, new_s_out


def mlp_chunk_values(q: Array, k: Array, v: Array, log_alpha: tuple[Array, Array],
                     log_beta: tuple[Array, Array], eta: tuple[Array, Array],
                     p: tuple[Array, Array] | None, mask: tuple[Array, Array],
                     state: tuple[Array, Array, Array, Array], *, affine: float, read: str,
                     activation: Callable[[Array], Array], differentiable: bool = False):
    """One chunk of the residual MLP memory `M(x) = x + W_out σ(W_in x)` with momentum and
    retention.

    Writes (design §3.4, §6.2, §6.4; D3, D5), snapshot gradients `G_t = δ_t a_tᵀ` per layer:
    `S_t = β_t S_{t−1} − η_t G_t`; `W_in ← W_in (α I − p k kᵀ) + m S_in` (DGD on the input side,
    when p is given), `W_out ← α W_out + m S_out`. Closed form (coefficients as
    `core.coefficients`):

        c_G[t, i] = η_i Σ_{s=i}^{t} P_α[t, s] m_s P_β[s, i],   κ_t = Σ_s P_α[t, s] m_s P_β[s, 0],
        W_t = ᾱ_t W_0 + κ_t S_0 − Σ_i c_G[t, i] δ_i a_iᵀ − Σ_s P_α[t, s] p_s u_s k_sᵀ,
        S_C = P_β[C, 0] S_0 − Σ_i η_i P_β[C, i] δ_i a_iᵀ,

    and running reads in dual form, layer by layer (TTT, D2).

    Args:
      q, k, v: [C, d]; gates as (column [C, 1], row [1, C]) pairs; mask: the write mask m.
      state: (W_in [h, d], W_out [d, h], S_in, S_out), the chunk-start state (= snapshot).
      differentiable: DGD solve by `unit_lower_solve_diff` (for `jax.vjp` in a backward kernel).

    Returns:
      (y [C, d], (W_in, W_out, S_in, S_out) at the chunk end).
    """
    w_in, w_out, s_in, s_out = state
    a = decay_factors(*log_alpha)
    bt = decay_factors(*log_beta)
    eta_c, eta_r = eta
    m_c, m_r = mask
    z, act, e, d_in = _mlp_snapshot(k, v, w_in, w_out, affine, activation)

    # Scalar coefficients of the chunk-end writes.
    x_end = a.end_row * m_r  # [1, C]
    c_end = eta_c * jnp.sum(bt.post_t * x_end, axis=1, keepdims=True)  # c_G[C, i] [C, 1]
    kappa_row = x_end * bt.lead_row  # κ_C = Σ_s of this [1, C]

    p_c, p_r = p if p is not None else (None, None)
    u = None
    if p is not None:
        u = _mlp_dgd_predictions(k, z, s_in, d_in, a, bt, eta_r, m_r, p, differentiable)
    y = _mlp_read(q, k, state, act, e, d_in, u, a, bt, eta_r, m_r, p_r, read, activation)
    return y, _mlp_end_state(k, state, act, e, d_in, u, a, bt, eta_c, p_c, c_end, kappa_row)
