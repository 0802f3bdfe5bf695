"""In-context levels of the Continuum Memory System (design §5.3, D9, D20–D22, D35).

A CMS level is a SwiGLU MLP `F_θ(z) = W_down (SiLU(W_g z) ⊙ W_up z)` applied residually. An
*in-context* level (chunk `C` < sequence length) is updated inside the forward pass, once per chunk,
by plain GD on a local associative objective, and reset to its meta-learned state at every new
sequence:

    reads:  z_t ↦ z_t + F_{θ_j}(z_t)                          for t in chunk j (snapshot θ_j, D2)
    write:  θ_{j+1} = θ_j − η · (1/C) Σ_{t ∈ chunk j} ∇_θ ℓ_loc(θ_j; z_t)          (Eq. 71, D22)
    ℓ_loc(θ; z) = ½ ‖F_θ(z) − W_tgt z‖²                        (W_tgt: outer parameter, init 0)
    η = η_max σ(ρ)                                              (ρ: outer scalar, η_max = 0.1)

Option `normalize`: "layer" (or True) divides each layer's per-token gradient term by
(1 + η‖x_t‖²), x_t the layer's own input (D3's step normalisation applied layer by layer);
"curvature" (the Hope presets) divides token t's whole gradient by (1 + ηρ_t), ρ_t the
Gauss–Newton curvature of its loss along that gradient (`curvature_local_grad`).

The chunk's summed gradient is one batched backward pass of the MLP (per-layer outer-product sums
as matmuls); no per-token gradient is materialised. A chunk whose end falls in the padding does not
write (D35); padded tokens never contribute to a gradient.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hope_jax.core.grouped_scan import grouped_scan

Array = jax.Array


class SwiGLUParams(NamedTuple):
    """`W_g`, `W_up`: [d, h]; `W_down`: [h, d] (row-major:
    `F(z) = (silu(z W_g) ⊙ z W_up) W_down`)."""

    w_gate: Array
    w_up: Array
    w_down: Array


def swiglu(params: SwiGLUParams, z: Array) -> Array:
    """F_θ(z) for rows z [..., d] → [..., d] (design §5.1)."""
    return (jax.nn.silu(z @ params.w_gate) * (z @ params.w_up)) @ params.w_down


class _Forward(NamedTuple):
    """The level's forward on a chunk and the residual's backprop into the hidden layer:
    s = SiLU(z W_g), u = z W_up, a = s ⊙ u, r = a W_down − z W_tgt, δa = r W_downᵀ, SiLU'(z W_g)."""

    s: Array
    u: Array
    a: Array
    r: Array
    da: Array
    dsilu: Array


def _forward(params: SwiGLUParams, w_target: Array, z: Array) -> _Forward:
    g = z @ params.w_gate
    u = z @ params.w_up
    s = jax.nn.silu(g)
    a = s * u
    r = a @ params.w_down - z @ w_target                       # residual [.., C, d]
    sig = jax.nn.sigmoid(g)
    dsilu = sig * (1 + g * (1 - sig))                          # SiLU'(g) = σ(g)(1 + g(1 − σ(g)))
    return _Forward(s, u, a, r, r @ params.w_down.T, dsilu)


def _weighted_backprop(z: Array, f: _Forward, w_in: Array,
                       w_hid: Array) -> SwiGLUParams:
    """Σ_t of the per-token gradients of ½‖r_t‖², the input layers' terms weighted by w_in[t] and
    W_down's by w_hid[t] (one matmul per layer)."""
    mt = lambda x, y: jnp.swapaxes(x, -1, -2) @ y              # Σ_t x_tᵀ y_t
    dw = f.da * w_in[..., None]
    return SwiGLUParams(mt(z, dw * f.u * f.dsilu), mt(z, dw * f.s), mt(f.a, w_hid[..., None] * f.r))


def normalized_local_grad(params: SwiGLUParams, w_target: Array, z: Array, weights: Array,
                          eta: Array) -> SwiGLUParams:
    """Σ_t weights_t · ∇_θ ½‖F_θ(z_t) − W_tgt z_t‖² with every layer's per-token term divided by
    (1 + η‖x_t‖²), x_t being THAT layer's input (z_t for W_g and W_up, the hidden
    a_t = SiLU(z_t W_g) ⊙ z_t W_up for W_down).

    The DGD step normalisation η/(1+η‖k‖²) of D3 applied layer by layer: a per-token write to a
    layer is then non-expansive along its input whatever the input's scale. Written as explicit
    backprop so that each layer gets its own per-token weights (one matmul per layer).
    """
    f = _forward(params, w_target, z)
    w_in = weights / (1.0 + eta * jnp.sum(z * z, -1))          # per token, input layers
    w_hid = weights / (1.0 + eta * jnp.sum(f.a * f.a, -1))    # per token, W_down
    return _weighted_backprop(z, f, w_in, w_hid)


def curvature_local_grad(params: SwiGLUParams, w_target: Array, z: Array, weights: Array,
                         eta: Array) -> SwiGLUParams:
    """Σ_t weights_t/(1 + η ρ_t) · ∇_θ ½‖F_θ(z_t) − W_tgt z_t‖², ρ_t = ‖J_t g_t‖² / ‖g_t‖²: the
    Gauss–Newton curvature of token t's loss along its own gradient g_t = J_tᵀ r_t (J_t the
    Jacobian of F_θ(z_t) in θ, all three matrices at once).

    The step η/(1 + ηρ_t) never takes a token past the minimum of its own loss along g_t (in the
    Gauss–Newton model), whatever the scale of any layer: the per-layer rule of
    `normalized_local_grad` sees only each layer's input, not the Jacobian of the layers after
    it, and diverged on MQAR when W_down grew (docs/hope.md, "In-context CMS: the curvature
    step"). Closed form, with a = s ⊙ u, s = SiLU(z W_g), u = z W_up, δa = r W_downᵀ:
        ‖g_t‖² = ‖a‖²‖r‖² + ‖z‖² (‖δa ⊙ s‖² + ‖δa ⊙ u ⊙ SiLU'‖²)
        J_t g_t = ‖a‖² r + ‖z‖² ((s² + u² SiLU'²) ⊙ δa) W_down
    """
    f = _forward(params, w_target, z)
    z2, a2 = jnp.sum(z * z, -1), jnp.sum(f.a * f.a, -1)
    g2 = a2 * jnp.sum(f.r * f.r, -1) + z2 * (jnp.sum(jnp.square(f.da * f.s), -1)
                                             + jnp.sum(jnp.square(f.da * f.u * f.dsilu), -1))
    jg = a2[..., None] * f.r + z2[..., None] * (((f.s * f.s + jnp.square(f.u * f.dsilu)) * f.da)
                                                @ params.w_down)
    rho = jnp.sum(jg * jg, -1) / jnp.where(g2 > 0, g2, 1.0)
    w = weights / (1.0 + eta * rho)
    return _weighted_backprop(z, f, w, w)


def local_loss(params: SwiGLUParams, w_target: Array, z: Array, weights: Array) -> Array:
    """Σ_t weights_t · ½‖F_θ(z_t) − W_tgt z_t‖²  (D9's default local objective; W_tgt [d, d])."""
    residual = swiglu(params, z) - z @ w_target
    return 0.5 * jnp.sum(weights[..., None] * jnp.square(residual))


class InContextState(NamedTuple):
    """Streaming state of an in-context level (leaves [B, ...]).

    theta: the current snapshot θ_j; grad_sum: Σ ∇ℓ_loc over the tokens of the current, unfinished
    chunk; position: tokens seen (int32 scalar), or None for a fresh sequence.
    """

    theta: SwiGLUParams
    grad_sum: SwiGLUParams
    position: Array | None = None


def init_in_context_state(params: SwiGLUParams, batch_size: int) -> InContextState:
    """A fresh sequence: θ = θ_0 (meta-learned), nothing accumulated (D9: reset per sequence)."""
    theta = jax.tree.map(lambda p: jnp.broadcast_to(p, (batch_size,) + p.shape), params)
    return InContextState(theta, jax.tree.map(jnp.zeros_like, theta), None)


NORMALIZATIONS = (False, True, "layer", "curvature")


def _check_level_args(params: SwiGLUParams, z: Array, chunk: int, reset_every: int | None,
                      retention: float, normalize=False, scan_group: int = 1) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if z.ndim != 3 or z.shape[-1] != params.w_gate.shape[0]:
        raise ValueError(f"z must have shape [B, T, d] with d = {params.w_gate.shape[0]} "
                         f"(the level's width), got {tuple(z.shape)}")
    if not 0.0 <= retention <= 1.0:
        raise ValueError(f"retention must be in [0, 1], got {retention!r}")
    if isinstance(scan_group, bool) or not isinstance(scan_group, int) or scan_group < 1:
        raise ValueError(f"scan_group must be a positive int, got {scan_group!r}")
    if reset_every is not None and (isinstance(reset_every, bool)
                                    or not isinstance(reset_every, int)
                                    or reset_every < 1 or reset_every % chunk):
        raise ValueError(f"reset_every must be a positive multiple of chunk ({chunk}), got "
                         f"{reset_every!r}")


class _Schedule(NamedTuple):
    """A call's tokens in a buffer of n chunks of c_buf tokens, and when each chunk writes.

    chunks: [n, B, c_buf, d] the buffer (zeros outside the tokens); real: [n, c_buf] the slots
    holding tokens (as z's dtype); ends: [n] the chunk really ends, so it writes (D35);
    resets: [n] θ ← θ_0 after its write (nested CMS, D24); offset: the first token's slot;
    every_chunk_writes: a fresh sequence of whole chunks (Σ∇ℓ is 0 at every chunk boundary).
    """

    chunks: Array
    real: Array
    ends: Array
    resets: Array
    total: int
    offset: Array | int
    every_chunk_writes: bool = False


def _schedule(state: InContextState, z: Array, chunk: int, reset_every: int | None) -> _Schedule:
    b, t, d = z.shape
    dynamic = state.position is not None
    # A decode step (one token, carried state) is a buffer of length 1 that writes iff it ends
    # its chunk: O(1) in C and in T.
    single = dynamic and t == 1
    c_buf = 1 if single else chunk
    n = 1 if single else math.ceil((t + (chunk - 1 if dynamic else 0)) / chunk)
    total = n * c_buf
    offset = (state.position % chunk).astype(jnp.int32) if dynamic and not single else 0
    zero = jnp.zeros((), jnp.int32)
    zp = jax.lax.dynamic_update_slice(jnp.zeros((b, total, d), z.dtype), z,
                                      (zero, jnp.asarray(offset, jnp.int32), zero))
    pos = jnp.arange(total)
    real = ((pos >= offset) & (pos < offset + t)).astype(z.dtype).reshape(n, c_buf)
    # a chunk writes only when it really ends (D35)
    ends = ((state.position + 1) % chunk == 0).astype(z.dtype)[None] if single else real[:, -1]
    chunks = jnp.moveaxis(zp.reshape(b, n, c_buf, d), 1, 0)  # [n, B, C, d]
    # absolute position after each buffer chunk (nested resets, D24)
    start = (state.position - offset) if dynamic else jnp.zeros((), jnp.int32)
    chunk_ends = start + (jnp.arange(n, dtype=jnp.int32) + 1) * c_buf
    resets = (jnp.zeros((n,), z.dtype) if reset_every is None else
              ends * (chunk_ends % reset_every == 0).astype(z.dtype))
    # a fresh sequence of whole chunks: every chunk ends, and its accumulator is spent, in-call
    every = not dynamic and total == t
    return _Schedule(chunks, real, ends, resets, total, offset, every)


def _scan_writes(params: SwiGLUParams, w_target: Array, grad_loss, eta: Array, chunk: int,
                 retention: float, state: InContextState, sched: _Schedule, scan_group: int):
    """Scan over the schedule's chunks: ((θ, Σ∇ℓ) after the last, ys [n, B, c_buf, d]).

    Each chunk is rematerialised in the backward and only every `scan_group`-th carry (θ, Σ∇ℓ)
    is stored (`grouped_scan`, D30): a plain scan kept every chunk's intermediates, 64 % of the
    small Hope step's activation memory (docs/core.md, "Memory profile")."""

    def one_sequence(theta, acc, zc, w, writes, reset):
        y = swiglu(theta, zc)  # reads at the snapshot θ_j
        acc = jax.tree.map(jnp.add, acc, grad_loss(theta, w_target, zc, w))
        # at the chunk end: write the mean (Eq. 71, D22) and start afresh
        theta = jax.tree.map(lambda p, g, p0: p - writes * ((1.0 - retention) * (p - p0)
                                                          + eta * g / chunk),
                             theta, acc, params)
        acc = jax.tree.map(lambda g: (1 - writes) * g, acc)
        # nested (Eq. 72, D24): back to θ_0 when the slower level starts a new chunk
        theta = jax.tree.map(lambda p, p0: jnp.where(reset > 0, p0.astype(p.dtype), p), theta,
                             params)
        return y, theta, acc

    per_sequence = jax.vmap(one_sequence, in_axes=(0, 0, 0, None, None, None))
    xs = (sched.chunks, sched.real, sched.ends, sched.resets)
    if sched.every_chunk_writes:
        # Every chunk ends inside the call and writes, so Σ∇ℓ is 0 at every chunk boundary: the
        # scan carries θ alone and the backward's checkpoints hold half as much.
        def body_theta(theta, inputs):
            zeros = jax.tree.map(jnp.zeros_like, theta)
            y, theta, _ = per_sequence(theta, zeros, *inputs)
            return theta, y

        theta, ys = grouped_scan(body_theta, state.theta, xs, remat=True, group=scan_group)
        return (theta, jax.tree.map(jnp.zeros_like, theta)), ys

    def body(carry, inputs):
        y, theta, acc = per_sequence(*carry, *inputs)
        return (theta, acc), y

    return grouped_scan(body, (state.theta, state.grad_sum), xs, remat=True, group=scan_group)


def in_context_level(params: SwiGLUParams, w_target: Array, rho: Array, z: Array, chunk: int,
                     eta_max: float = 0.1, state: InContextState | None = None,
                     reset_every: int | None = None, normalize: bool = False,
                     retention: float = 1.0, scan_group: int = 1
                     ) -> tuple[Array, InContextState]:
    """Runs one in-context CMS level over sequences.

    Args:
      params: meta-learned initial MLP θ_0 (shared by all sequences).
      w_target: W_tgt [d, d]; rho: the step-size logit ρ [] (η = η_max σ(ρ)).
      z: the level's input [B, T, d]; chunk: the update period C.
      state: None for fresh sequences, or the state a previous call returned (streaming: the
        sequence continues, mid-chunk included).
      reset_every: nested CMS (Eq. 72, D24): after the write at every multiple of this many
        tokens (a chunk boundary of the slower level above; a multiple of `chunk`), θ ← θ_0.
      normalize: True / "layer": divide each layer's per-token gradient by (1 + η‖x_t‖²), x_t
        that layer's input (`normalized_local_grad`); "curvature" (the Hope presets): divide
        token t's whole gradient by (1 + ηρ_t), ρ_t its Gauss–Newton curvature along itself
        (`curvature_local_grad`). Off = D22 as printed (plain GD): with the RMS-normalised
        stream ‖z‖² ≈ d, plain GD at η_max = 0.1 is expansive for d ≳ 40 and diverged on real
        text, and the per-layer rule diverged on MQAR (docs/hope.md).
      retention: r in θ ← θ_0 + r (θ − θ_0) − η ḡ at every write: the level decays toward its
        meta-learned θ_0, so its distance from θ_0 stays bounded however long the context (1 = D22
        as printed: plain GD, which drifts further with every chunk past the training length;
        docs/hope.md, "Stable writes that matter").

      scan_group: the backward stores the level's state once every this many chunks and
        recomputes the rest (`grouped_scan`); every chunk is rematerialised either way.

    Returns:
      (F_θ(z) [B, T, d], each token read at its chunk's snapshot; the new state). The caller adds
      the residual.
    """
    _check_level_args(params, z, chunk, reset_every, retention, normalize, scan_group)
    b, t, d = z.shape
    if state is None:
        state = init_in_context_state(params, b)
    dynamic = state.position is not None
    sched = _schedule(state, z, chunk, reset_every)
    eta = eta_max * jax.nn.sigmoid(rho)
    if normalize == "curvature":
        grad_loss = lambda th, wt, zc, w: curvature_local_grad(th, wt, zc, w, eta)
    elif normalize:
        grad_loss = lambda th, wt, zc, w: normalized_local_grad(th, wt, zc, w, eta)
    else:
        grad_loss = jax.grad(local_loss)
    (theta, acc), ys = _scan_writes(params, w_target, grad_loss, eta, chunk, retention, state,
                                    sched, scan_group)
    y = jnp.moveaxis(ys, 0, 1).reshape(b, sched.total, d)
    y = jax.lax.dynamic_slice_in_dim(y, sched.offset, t, axis=1) if dynamic else y[:, :t]
    position = jnp.asarray(t, jnp.int32) + (state.position if dynamic else 0)
    return y, InContextState(theta, acc, position.astype(jnp.int32))
