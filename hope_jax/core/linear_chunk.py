"""Fast path for a linear (matrix) memory with an affine objective: chunk transitions are affine.

For `M(k) = W k` (optionally `k + W k`) and an objective with error `e = c·y − v` (l2: c = 1,
dot: c = 0), the snapshot errors are `Δ = c K W_ξᵀ − V'` (`V' = V − c K` with the residual), so
every term of the closed form (`closed_form.py`) is linear in the chunk-start running memory
`W_0`, momentum `S_0` and snapshot `W_ξ`. The chunk is then a set of affine maps, computed
from the chunk's inputs alone (`prepare_linear_chunk`):

    Y   = R_w W_0ᵀ + R_s S_0ᵀ + R_ξ W_ξᵀ + Y_c                         (reads)
    W_C = ᾱ_C W_0 + W_0 E_w + S_0 E_s + W_ξ E_ξ + E_c                  (memory at the chunk end)
    S_C = β̄ S_0 + W_ξ F_ξ + F_c                                        (momentum at the chunk end)

and applied to the carried state with a handful of [C, d]·[d, d] matmuls (`linear_chunk`). The
scan prepares each chunk inside its checkpointed step (see `scan.chunked_scan`). With the DGD
preconditioner this is the chunkwise WY/UT form of DeltaNet and Gated DeltaNet: the predictions
`U = T B` use `T = (I + L)⁻¹` and split into the same three maps (`U = P_w W_0ᵀ + P_s S_0ᵀ +
P_ξ W_ξᵀ + U_c`). Linear attention (dot, GD, no decay) reduces to Titans Eq. 17's matmul form.
Because the maps compose, the inter-chunk scan could also run as an associative scan for
sequence parallelism. On CPU the cost is the number of batched [C, C]/[C, d] ops more than their
FLOPs: the DGD system is inverted by blocked matmuls with a written-out derivative
(`coefficients.unit_lower_inverse`). Without momentum (DeltaNet, Gated DeltaNet) the gradient and
preconditioner terms merge into one product and the chunk is kept in its "new values" form
(`DeltaChunkForm`, `_dgd_delta_form`): the step solves `(I + L') Z = V' − K_w W_0ᵀ` for one
right-hand side and reads and writes through V_new = E Z, which costs fewer products overall than
precomposing the maps.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hope_jax.core.closed_form import ChunkPrep, effective_gates
from hope_jax.core.coefficients import (chunk_coefficients, decay_matrix, unit_lower_inverse,
                                        unit_lower_solve)
from hope_jax.core.inner_optimizers import RecurrenceSpec

Array = jax.Array
sg = jax.lax.stop_gradient


class LinearChunkMaps(NamedTuple):
    """The affine maps of one chunk (one head, one sequence); fields absent are None.

    read_w, read_s, read_n: [C, d_k] (R_w, R_s, R_ξ); read_c: [C, d_v].
    end_decay: [] (ᾱ_C); end_w: [d_k, d_k] or None, so that W_0's map is ᾱ_C I + E_w (the scaled
    identity is never materialised); end_s, end_n: [d_k, d_k]; end_c: [d_v, d_k].
    mom_decay: []; mom_n: [d_k, d_k]; mom_c: [d_v, d_k].
    """

    read_w: Array
    read_s: Array | None
    read_n: Array | None
    read_c: Array
    end_decay: Array
    end_w: Array | None
    end_s: Array | None
    end_n: Array | None
    end_c: Array
    mom_decay: Array | None
    mom_n: Array | None
    mom_c: Array | None


def _left_matmul(left: Array, blocks: list) -> list:
    """[left @ b for b in blocks] (None blocks give None). Separate products: concatenating the
    operands into one product is slower on CPU (the copies cost more than the larger GEMM saves)."""
    return [None if b is None else left @ b for b in blocks]


def _right_matmul(blocks: list, right: Array) -> list:
    """[b.T @ right for b in blocks] (None blocks give None)."""
    return [None if b is None else b.T @ right for b in blocks]


def _prepare(spec: RecurrenceSpec, stop_writes: bool, q: Array, k: Array, eta: Array,
             alpha: Array | None, beta: Array | None, mask: Array | None):
    """`closed_form.prepare_chunk`, with the DGD system inverted by blocked matmuls
    (`unit_lower_inverse`) instead of a triangular solve (several times faster on CPU, forward and
    backward). Also returns (base, η_e, g, L'): without momentum base[t, i] = P_α[t, i+1] (c_G =
    base·diag(η_e), c_U = base·diag(p)), else base is None.

    With momentum the DGD system `(I + (c_U ⊙ KKᵀ))⁻¹` is inverted here (closed_form.py). Without
    momentum it is left to `_dgd_delta_form`, which solves it in its row-scaled form
    `I + L'`, L' = G (base ⊙ KKᵀ) E (strictly lower), with E = diag(η_e), G = diag(p/η_e)."""
    if stop_writes:
        k, eta = sg(k), sg(eta)
        alpha = None if alpha is None else sg(alpha)
        beta = None if beta is None else sg(beta)
    c = k.shape[0]
    eta_e, alpha_e, beta_e, p = effective_gates(spec, k, eta, alpha, beta, mask)
    live = None if mask is None else mask.astype(k.dtype)
    co = chunk_coefficients(eta_e, alpha_e, beta_e, p, live)
    kk = inverse = gain = strict = None
    base = decay_matrix(alpha_e)[:, 1:] if beta_e is None else None  # CSE'd with `co`'s
    if spec.dgd:
        kk = k @ k.T
        if base is None:
            inverse = unit_lower_inverse(co.precond_weights[:c] * kk)  # strictly lower
        else:
            gain = _precond_gain(spec, k, eta, alpha)
            strict = (base[:c] * kk) * eta_e[None, :]
            strict = strict if gain is None else gain[:, None] * strict
    return ChunkPrep(co, q @ k.T, kk, inverse), base, eta_e, gain, strict


def _precond_gain(spec: RecurrenceSpec, k: Array, eta: Array, alpha: Array | None
                  ) -> Array | None:
    """g with p = η_e ⊙ g (`effective_gates`; padding zeroes both η_e and p), or None for g ≡ 1:
    α when gated, times 1/(1+η‖k‖²) or (1+η‖k‖²) when only one of η_e and p is normalised."""
    gain = None
    if spec.dgd_normalize != spec.normalize_step:
        sq = 1.0 + eta * jnp.sum(jnp.square(k), axis=-1)
        gain = 1.0 / sq if spec.dgd_normalize else sq
    if spec.dgd_gated:
        gain = alpha if gain is None else gain * alpha
    return gain


class DeltaChunkForm(NamedTuple):
    """One chunk of a DGD level without momentum in "new values" form (chunkwise Gated DeltaNet).

    With X = (I + L')⁻¹ (`_prepare`) the chunk's writes reduce to per-token new values

        V_new = E X (V' − K_w W_0ᵀ − K_n W_ξᵀ),

    one triangular solve of one right-hand side in the scan step (`_delta_chunk`); then

        Y   = R W_0ᵀ + A V_new (+ Q with the residual)      (post / pre reads)
        Y   = Q W_ξᵀ (+ Q)                                  (snapshot reads)
        W_C = ᾱ_C W_0 + V_newᵀ (base[C] ⊙ K).

    Fields (one head, one sequence): system L' [C, C] (strictly lower; entries on and above the
    diagonal are ignored); step η_e [C] (E); keys_w K_w = G (ᾱ ⊙ K) [C, d_k] (+ c K when
    W_ξ = W_0 is folded in); keys_n K_n = c K [C, d_k] when W_ξ is kept apart, else None; values
    V' [C, d_v]; read_q R = ᾱ_rows ⊙ Q [C, d_k] and scores A = base_rows ⊙ QKᵀ [C, C] (both None
    for snapshot reads); end_keys base[C] ⊙ K [C, d_k]; end_decay ᾱ_C []; read_bias Q with a
    residual memory, else None.

    Solving for the state-dependent right-hand side in the step, instead of forming the
    state-independent solutions X K_w and X V' beforehand, takes one [C, C]·[C, d] product out of
    the forward and one out of the backward: the solve's backward pulls one cotangent U = Xᵀ V̄
    through the system (dL' = −tril(U V_newᵀ)), where two right-hand sides need two of each.
    """

    system: Array
    step: Array
    keys_w: Array
    keys_n: Array | None
    values: Array
    read_q: Array | None
    scores: Array | None
    end_keys: Array
    end_decay: Array
    read_bias: Array | None


def _dgd_delta_form(prep: ChunkPrep, base: Array, eta_e: Array, gain: Array | None,
                    strict: Array, cy: float, residual: bool, read: str, separate_snapshot: bool,
                    q: Array, k: Array, v_eff: Array) -> DeltaChunkForm:
    """The new-values form of a DGD chunk without momentum.

    There c_G = base·E and c_U = base·P with E = diag(η_e), P = diag(p) = E G, and the DGD system
    is L = (base ⊙ KKᵀ) P. By the push-through identity G (I + L)⁻¹ = (I + L')⁻¹ G with the
    row-scaled L' = G (base ⊙ KKᵀ) E, and L'(I + L')⁻¹ = I − (I + L')⁻¹, every gradient +
    preconditioner pair collapses to one product with X = (I + L')⁻¹:

        V_new = E X (V' − G (ᾱ ⊙ K) W_0ᵀ − c K W_ξᵀ)

    (the "new values" of chunkwise Gated DeltaNet). When W_ξ = W_0 (`separate_snapshot=False`)
    the c K term folds into the W_0 keys.
    """
    co = prep.coeffs
    c = k.shape[0]
    keys_w = co.decay[:c, None] * k
    if gain is not None:
        keys_w = gain[:, None] * keys_w
    if cy and not separate_snapshot:
        keys_w = keys_w + cy * k
    keys_n = cy * k if cy and separate_snapshot else None
    read_q = scores = None
    if read != "snapshot":
        rows = slice(1, c + 1) if read == "post" else slice(0, c)
        scores = base[rows] * prep.qk
        read_q = co.decay[rows, None] * q
    return DeltaChunkForm(strict, eta_e, keys_w, keys_n, v_eff, read_q, scores,
                          base[c][:, None] * k, co.decay[c], q if residual else None)


def _read_maps(prep: ChunkPrep, read: str, residual: bool, cy: float, has_mom: bool, dgd: bool,
               u_parts: list | None, q: Array, k: Array, v_eff: Array) -> tuple:
    """(read_w, read_s, read_n, read_c): the maps of the chunk's reads from W_0, S_0, W_ξ and the
    constant (None where zero)."""
    co = prep.coeffs
    c = k.shape[0]
    if read == "snapshot":
        read_w, read_s, read_n = jnp.zeros_like(q), None, q
        read_c = q if residual else jnp.zeros_like(v_eff)
        return read_w, read_s, read_n, read_c
    rows = slice(1, c + 1) if read == "post" else slice(0, c)
    gw_r = co.grad_weights[rows] * prep.qk
    read_w = co.decay[rows, None] * q
    read_s = co.carry[rows, None] * q if has_mom else None
    r_k, read_c = _left_matmul(gw_r, [k if cy else None, v_eff])
    read_n = -cy * r_k if cy else None
    if residual:
        read_c = read_c + q
    if dgd:
        cu_r = co.precond_weights[rows] * prep.qk
        d_w, d_s, d_n, d_c = _left_matmul(cu_r, u_parts)
        read_w, read_c = read_w - d_w, read_c - d_c
        read_s = None if d_s is None else read_s - d_s
        read_n = None if d_n is None else read_n - d_n
    return read_w, read_s, read_n, read_c


def _end_maps(prep: ChunkPrep, cy: float, has_mom: bool, dgd: bool, u_parts: list | None,
              eye: Array, k: Array, v_eff: Array) -> tuple:
    """Chunk end (row C) and momentum end: (end_decay, end_w, end_s, end_n, end_c, mom_decay,
    mom_n, mom_c); W_0's map is end_decay·I + end_w."""
    co = prep.coeffs
    c = k.shape[0]
    gk = co.grad_weights[c][:, None] * k  # diag(c_G[C]) K
    end_decay = co.decay[c]
    end_w = None  # W_0's map is end_decay·I + end_w
    end_s = co.carry[c] * eye if has_mom else None
    e_k, end_c = _right_matmul([k if cy else None, v_eff], gk)
    end_n = -cy * e_k if cy else None
    if dgd:
        dk = co.precond_weights[c][:, None] * k  # diag(c_U[C]) K
        f_w, f_s, f_n, f_c = _right_matmul(u_parts, dk)
        end_w, end_c = -f_w, end_c - f_c
        end_s = None if f_s is None else end_s - f_s
        end_n = None if f_n is None else end_n - f_n
    mom_decay = mom_n = mom_c = None
    if has_mom:
        mk = co.momentum_grad_weights[:, None] * k
        mom_decay = co.momentum_decay
        m_k, mom_c = _right_matmul([k if cy else None, v_eff], mk)
        mom_n = -cy * m_k if cy else None
    return end_decay, end_w, end_s, end_n, end_c, mom_decay, mom_n, mom_c


def prepare_linear_chunk(spec: RecurrenceSpec, affine: float, residual: bool, read: str,
                         stop_writes: bool, separate_snapshot: bool, q: Array, k: Array,
                         v: Array, eta: Array, alpha: Array | None, beta: Array | None,
                         mask: Array | None) -> LinearChunkMaps | DeltaChunkForm:
    """The affine maps of one chunk (the new-values form `DeltaChunkForm` for DGD without
    momentum). `separate_snapshot=False` folds the W_ξ maps into the W_0 maps (valid when the
    chunk starts at a chunk boundary, where W_ξ = W_0)."""
    if stop_writes:
        k, v = sg(k), sg(v)
    prep, base, eta_e, gain, strict = _prepare(spec, stop_writes, q, k, eta, alpha, beta, mask)
    co = prep.coeffs
    c, d_k = k.shape
    cy = affine
    v_eff = v - cy * k if residual else v
    eye = jnp.eye(d_k, dtype=k.dtype)
    has_mom = co.carry is not None
    if spec.dgd and not has_mom:
        return _dgd_delta_form(prep, base, eta_e, gain, strict, cy, residual, read,
                               separate_snapshot, q, k, v_eff)
    # DGD predictions U = P_w W_0ᵀ + P_s S_0ᵀ + P_n W_ξᵀ + U_c (terms with c = 0 are skipped).
    u_parts = None
    if spec.dgd:
        gw_in = co.grad_weights[:c] * prep.kk  # rows t−1: weights of δ_i in B_t
        k_n, v_n = _left_matmul(gw_in, [k if cy else None, v_eff])
        p_w, p_s, p_n, u_c = _left_matmul(prep.system_inverse, [
            co.decay[:c, None] * k, co.carry[:c, None] * k if has_mom else None,
            -cy * k_n if cy else None, v_n])
        u_parts = [p_w, p_s, p_n, u_c]

    read_maps = _read_maps(prep, read, residual, cy, has_mom, spec.dgd, u_parts, q, k, v_eff)
    end_maps = _end_maps(prep, cy, has_mom, spec.dgd, u_parts, eye, k, v_eff)
    return _fold(separate_snapshot, q, eye, *read_maps, *end_maps)


def _fold(separate_snapshot, q, eye, read_w, read_s, read_n, read_c, end_decay, end_w, end_s,
          end_n, end_c, mom_decay, mom_n, mom_c) -> LinearChunkMaps:
    def add(a, b):
        return b if a is None else (a if b is None else a + b)

    if separate_snapshot:  # keep explicit (zero) W_ξ maps so the step's structure is static
        read_n = jnp.zeros_like(q) if read_n is None else read_n
        end_n = jnp.zeros_like(eye) if end_n is None else end_n
    else:
        read_w, read_n = add(read_w, read_n), None
        end_w, end_n = add(end_w, end_n), None  # mom_n then acts on W_0 (= W_ξ)
    return LinearChunkMaps(read_w, read_s, read_n, read_c, end_decay, end_w, end_s, end_n, end_c,
                           mom_decay, mom_n, mom_c)


def _delta_chunk(form: DeltaChunkForm, q: Array, w0: Array, snap: Array | None):
    """(y, W_C) of a chunk in new-values form (`DeltaChunkForm`); snap: W_ξ when kept apart."""
    w_n = w0 if snap is None else snap
    rhs = form.values - form.keys_w @ w0.T
    if form.keys_n is not None:
        rhs = rhs - form.keys_n @ w_n.T
    (solved,) = unit_lower_solve(form.system, (rhs,))
    new = form.step[:, None] * solved
    if form.scores is None:  # snapshot reads
        y = q @ w_n.T
    else:
        y = form.read_q @ w0.T + form.scores @ new
    if form.read_bias is not None:
        y = y + form.read_bias
    return y, form.end_decay * w0 + new.T @ form.end_keys


def linear_chunk(maps: LinearChunkMaps | DeltaChunkForm, stop_writes: bool, q: Array, w0: Array,
                 s0: Array | None, snap: Array | None):
    """Applies one chunk's maps (or new-values form) to the carried state (one head, one sequence).

    w0: [d_v, d_k] running memory; s0: momentum or None; snap: W_ξ when kept apart, else None.
    Returns (y [C, d_v], W_C, S_C or None).
    """
    live_w0 = w0
    if stop_writes:
        w0 = sg(w0)
        s0 = None if s0 is None else sg(s0)
        snap = None if snap is None else sg(snap)
    if isinstance(maps, DeltaChunkForm):
        y, w_end = _delta_chunk(maps, q, w0, snap)
        if stop_writes:
            y = y + q @ (live_w0 - w0).T
            w_end = w_end + (live_w0 - w0)
        return y, w_end, None
    w_n = w0 if snap is None else snap  # the snapshot's maps act on W_ξ (= W_0 when folded)
    y = maps.read_w @ w0.T + maps.read_c
    w_end = maps.end_decay * w0 + maps.end_c
    if maps.end_w is not None:
        w_end = w_end + w0 @ maps.end_w
    if snap is not None:
        y = y + maps.read_n @ snap.T
        w_end = w_end + snap @ maps.end_n
    s_end = None
    if s0 is not None:
        if maps.read_s is not None:  # snapshot reads do not see the momentum
            y = y + maps.read_s @ s0.T
        w_end = w_end + s0 @ maps.end_s
        s_end = maps.mom_decay * s0 + maps.mom_c
        if maps.mom_n is not None:
            s_end = s_end + w_n @ maps.mom_n
    if stop_writes:
        y = y + q @ (live_w0 - w0).T  # zero value; the read's gradient w.r.t. W_0
        w_end = w_end + (live_w0 - w0)
    return y, w_end, s_end
