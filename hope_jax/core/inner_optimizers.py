"""Inner optimizers of a level, as optax-style gradient transformations (design §2.1–2.3).

Each transformation is a pure `(init, update)` pair with a NamedTuple state, like optax's. Inner
optimizers act on one memory instance (one head of one sequence) at one token and take the
per-token hyperparameters as extra arguments, as optax's extra-args transforms do:

    updates, state = opt.update(grads, state, params, eta=η_t, alpha=α_t, beta=β_t, key=k_t)
    params = params + updates                      # NL sign convention: updates carry the minus

`eta`, `alpha`, `beta` are scalars and `key` is the memory's input vector `k_t` [d_in];
`curvature` is the scalar ρ_t = ‖∇_W ℓ‖² / ‖∂ℓ/∂M(k)‖² of the token's gradient (see
`gradient_curvature`), read only by the curvature-normalised step. Memory parameters are tuples
of layer matrices, input side first (see `memories.py`).

The building blocks, chained in this canonical order:

    scale_by_step_size     u = −η g               (η read as η/(1+η‖k‖²) or η/(1+ηρ) when
                                                    normalised)
    trace_momentum         S = β S + u;  u = S     (Titans' surprise; §2.2, D5; or
                                                    S = β S + (1−β) u)
    add_retention          u += (α − 1) W          (weight decay / forget gate; §2.1; or
                                                    u += (α − 1)(W − W_init): decay toward the
                                                    initial state)
    add_dgd_preconditioner u[0] −= p (W₀ k) kᵀ     (DGD on the input-side layer; §2.3, D3)

so that one token's write is `S_t = β S_{t−1} − η G_t`, `W_t = W_{t−1}(α I − p k kᵀ) + S_t`. Besides
`init`/`update`, every transformation describes how it changes that canonical recurrence
(`RecurrenceSpec`); the chunked scan uses the description to run the closed (dual / WY) form. A
chain that leaves the canonical order has no description and runs on the generic chunk path.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Params = tuple


@dataclasses.dataclass(frozen=True)
class RecurrenceSpec:
    """The canonical per-token write `S_t = β S_{t−1} − η_e G_t; W_t = W_{t−1}(α I − p k kᵀ) + S_t`.

    Attributes:
      stage: how far along the canonical order the chain is (0 nothing, 1 step, 2 momentum,
        3 retention / preconditioner); used to reject non-canonical chains.
      normalize_step: η_e = η/(1+η‖k‖²) instead of η.
      step_curvature: η_e = η/(1+η ρ_t), ρ_t the curvature of the token's own gradient
        (`gradient_curvature`; docs/hope.md, "Curvature-normalised step").
      step_chunk_causal: with `step_curvature`, η_e is further scaled by the chunk-causal factor
        μ_t of `remaining_error_fraction` (the share of token t's snapshot error that the running
        state has not corrected yet); `normalize="curvature"` sets it, "curvature_token" not.
      momentum_slot: index in the chain state of the momentum buffer S (None: no momentum, β ≡ 0).
      momentum_dampening: S_t = β S_{t−1} + (1 − β) u_t, i.e. η_e is further scaled by (1 − β_t).
      retention: α_t multiplies the old state (else α ≡ 1).
      anchor_slot: with retention toward the initial state, the index in the chain state of the
        anchor W_init (the old state's distance to it is what α_t multiplies), else None.
      dgd: the DGD preconditioner acts on the input-side layer with coefficient p.
      dgd_normalize: p = η/(1+η‖k‖²) instead of η.
      dgd_curvature: p = η/(1+ηρ_t) (the curvature-normalised step's η'; overrides dgd_normalize).
      dgd_gated: p is additionally multiplied by α (Gated DeltaNet: gradient at the decayed state).
    """

    stage: int = 0
    normalize_step: bool = False
    step_curvature: bool = False
    step_chunk_causal: bool = False
    momentum_slot: int | None = None
    momentum_dampening: bool = False
    retention: bool = False
    anchor_slot: int | None = None
    dgd: bool = False
    dgd_normalize: bool = True
    dgd_curvature: bool = False
    dgd_gated: bool = False

    @property
    def has_step(self) -> bool:
        return self.stage >= 1


class InnerTransform(NamedTuple):
    """An inner optimizer: optax-style `init`/`update` plus its recurrence description.

    describe(spec, slot) -> RecurrenceSpec | None: the canonical recurrence after this transform,
    given the one before it (`slot` is this transform's index in the enclosing chain's state).
    """

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Params, Any]]
    describe: Callable[[RecurrenceSpec | None, int], RecurrenceSpec | None]


class EmptyState(NamedTuple):
    """State of a stateless transformation."""


class AnchorState(NamedTuple):
    """The initial memory W_init that retention decays toward (`add_retention(to_init=True)`)."""

    anchor: Params


class MomentumState(NamedTuple):
    """The momentum memory S (one buffer per layer, shaped like the memory's parameters)."""

    momentum: Params


def normalized_step_size(eta: Array, key: Array) -> Array:
    """η' = η / (1 + η‖k‖²): the exact Sherman–Morrison step of the proximal L2 step (design
    §2.3)."""
    return eta / (1.0 + eta * jnp.sum(jnp.square(key), axis=-1))


def curvature_step_size(eta: Array, curvature: Array) -> Array:
    """η' = η / (1 + η ρ): the proximal step of the memory linearised along its own gradient.

    For a loss ℓ(M(k)) with output error e = ∂ℓ/∂M(k) and gradient g = ∇_W ℓ, one step −η g moves
    the output by −η J Jᵀ e, and eᵀ J Jᵀ e = ‖g‖² (J: the output's Jacobian in W). With
    ρ = ‖g‖²/‖e‖² the step corrects a fraction ηρ/(1+ηρ) < 1 of the error along e: never past
    the target, whatever the widths and weights. For a depth-1 memory ρ = ‖k‖², so this is
    `normalized_step_size` (D3); for an MLP memory it also counts the hidden layers' inputs
    (‖σ(W₂k)‖² ≈ 0.4·hidden for W₁) and the output Jacobian seen by the input-side layer.
    """
    return eta / (1.0 + eta * curvature)


def gradient_curvature(grads: Params, error: Array) -> Array:
    """ρ = ‖∇_W ℓ‖² / ‖e‖², summed over the layers of one token's gradient (0 when e = 0)."""
    g2 = sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))
    e2 = jnp.sum(jnp.square(error))
    return jnp.where(e2 > 0, g2 / jnp.where(e2 > 0, e2, 1.0), 0.0)


def remaining_error_fraction(grads: Params, error: Array, params: Params, snap: Params) -> Array:
    """μ_t = 1 + ⟨g_t, W_{t−1} − W_snap⟩ / ‖e_t‖²: the chunk-causal factor of the curvature step
    (docs/hope.md, "Chunk-causal curvature step").

    A chunk's gradients g_t = J_tᵀ e_t are all taken at its snapshot W_snap (D2), but token t
    writes into the running state W_{t−1}, which the chunk's earlier writes (and retention,
    momentum, DGD) have already moved. To first order the output at k_t has moved by J_t ΔW, so
    the error left along e_t is e_t + J_t ΔW projected on e_t: the fraction
    1 + eᵀ J ΔW / ‖e‖² = 1 + ⟨g, ΔW⟩/‖e‖² of the snapshot's. Scaling the step by μ_t makes C
    copies of one key/target pair in a chunk take the sequential steps f(1 − f)^{t−1} (f the
    fraction one step corrects) instead of C full steps past the target (exact for a depth-1
    memory and the ½‖·‖² objective). It reads only the running state, so a chunk streamed token
    by token gives the same μ as the chunk at once. 1 when e = 0.
    """
    dot = sum(jnp.sum(g * (w - w0)) for g, w, w0 in
              zip(jax.tree.leaves(grads), jax.tree.leaves(params), jax.tree.leaves(snap)))
    e2 = jnp.sum(jnp.square(error))
    return 1.0 + jnp.where(e2 > 0, dot / jnp.where(e2 > 0, e2, 1.0), 0.0)


def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


# -- building blocks -------------------------------------------------------------------------

STEP_NORMALIZATIONS = (False, True, "key", "curvature", "curvature_token")
CURVATURE_NORMALIZATIONS = ("curvature", "curvature_token")


def _check_normalize(normalize) -> None:
    if normalize not in STEP_NORMALIZATIONS:
        raise ValueError(f"normalize must be False, True / 'key' (η/(1+η‖k‖²)), 'curvature' "
                         f"(η/(1+ηρ) with the chunk-causal factor) or 'curvature_token' "
                         f"(η/(1+ηρ) per token), got {normalize!r}")


def scale_by_step_size(normalize: bool | str = False) -> InnerTransform:
    """u = −η_t g: one plain GD step on the inner objective (design §2.1, Eq. 1).

    `normalize`: True or "key" reads η_t as η_t/(1+η_t‖k_t‖²) (the DGD step size of D3);
    "curvature_token" reads it as η_t/(1+η_t ρ_t) with the gradient's own curvature ρ_t
    (`curvature_step_size`; equal to "key" for a depth-1 memory); "curvature" further multiplies
    it by the chunk-causal factor μ_t (`remaining_error_fraction`, passed as `chunk_scale` by the
    chunked paths; 1 at C = 1).
    """
    _check_normalize(normalize)
    by_curvature = normalize in CURVATURE_NORMALIZATIONS
    chunk_causal = normalize == "curvature"
    by_key = normalize is True or normalize == "key"

    def init(params):
        return EmptyState()

    def update(updates, state, params=None, *, eta, alpha=None, beta=None, key=None,
               curvature=None, chunk_scale=None):
        if by_curvature:
            step = curvature_step_size(eta, curvature)
            if chunk_causal and chunk_scale is not None:
                step = step * chunk_scale
        else:
            step = normalized_step_size(eta, key) if by_key else eta
        return jax.tree.map(lambda g: -step * g, updates), state

    def describe(spec, slot):
        if spec is None or spec.stage != 0:
            return None
        return dataclasses.replace(spec, stage=1, normalize_step=by_key,
                                   step_curvature=by_curvature, step_chunk_causal=chunk_causal)

    return InnerTransform(init, update, describe)


def trace_momentum(dampening: bool = False) -> InnerTransform:
    """S_t = β_t S_{t−1} + u_t, u ← S_t: momentum as a key-less memory (design §1.4, §2.2; D5).

    `dampening=True`: S_t = β_t S_{t−1} + (1 − β_t) u_t, an exponential average of the updates.
    One token's update then adds up to u over all later steps (not u/(1 − β)), so momentum can
    no longer carry a correction past its target (docs/hope.md, "Dampened momentum").
    """

    def init(params):
        return MomentumState(jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None, *, eta=None, alpha=None, beta, key=None,
               curvature=None, chunk_scale=None):
        gain = (1.0 - beta) if dampening else 1.0
        momentum = jax.tree.map(lambda s, u: beta * s + gain * u, state.momentum, updates)
        return momentum, MomentumState(momentum)

    def describe(spec, slot):
        if spec is None or spec.stage != 1:
            return None
        return dataclasses.replace(spec, stage=2, momentum_slot=slot, momentum_dampening=dampening)

    return InnerTransform(init, update, describe)


def add_retention(to_init: bool = False) -> InnerTransform:
    """u ← u + (α_t − 1) W: retention α_t multiplies the old state (design §2.1; 1 = keep all).

    `to_init=True`: u ← u + (α_t − 1)(W − W_init), the state decays toward the memory it started
    from (kept in the state by `init`) instead of toward 0: Miras' retention with the initial
    state as its anchor. A meta-learned W_init (Hope's M_□,0) then survives any context length;
    decaying to 0 erases it at a rate α^t (docs/hope.md, "Retention toward the initial state").
    """

    def init(params):
        return AnchorState(params) if to_init else EmptyState()

    def update(updates, state, params=None, *, eta=None, alpha, beta=None, key=None,
               curvature=None, chunk_scale=None):
        if to_init:
            return jax.tree.map(lambda u, w, a: u + (alpha - 1.0) * (w - a), updates, params,
                                state.anchor), state
        return jax.tree.map(lambda u, w: u + (alpha - 1.0) * w, updates, params), state

    def describe(spec, slot):
        if spec is None or spec.stage < 1 or spec.retention:
            return None
        return dataclasses.replace(spec, stage=3, retention=True,
                                   anchor_slot=slot if to_init else None)

    return InnerTransform(init, update, describe)


def add_dgd_preconditioner(normalize: bool | str = True, gated: bool = False) -> InnerTransform:
    """u[0] ← u[0] − p_t (W₀ k_t) k_tᵀ: the DGD term `W (α I − p k kᵀ)` on the input-side layer.

    Design §2.3 and D3 (NL Eq. 88): p = η' = η/(1+η‖k‖²) with `normalize` (default), else p = η;
    `normalize="curvature"` / "curvature_token": p = η/(1+ηρ), the per-token η' of the gradient
    step (D3's "η' in both places"; the DGD term needs no chunk-causal factor, as its triangular
    system already reads the running state). `gated=True` multiplies p by α_t, which turns the
    L2 step at the decayed state `α M` of Gated DeltaNet into this form (design §4). Other
    layers get only the plain decay α.
    """
    _check_normalize(normalize)
    by_curvature = normalize in CURVATURE_NORMALIZATIONS

    def init(params):
        return EmptyState()

    def update(updates, state, params=None, *, eta, alpha=None, beta=None, key,
               curvature=None, chunk_scale=None):
        if by_curvature:
            p = curvature_step_size(eta, curvature)
        else:
            p = normalized_step_size(eta, key) if normalize else eta
        if gated:
            p = p * alpha
        w0 = params[0]
        first = updates[0] - p * jnp.outer(w0 @ key, key)
        return (first,) + tuple(updates[1:]), state

    def describe(spec, slot):
        if spec is None or spec.stage < 1 or spec.dgd:
            return None
        return dataclasses.replace(spec, stage=3, dgd=True, dgd_normalize=bool(normalize),
                                   dgd_curvature=by_curvature, dgd_gated=gated)

    return InnerTransform(init, update, describe)


def chain(*transforms: InnerTransform) -> InnerTransform:
    """Applies transformations in sequence (like `optax.chain`); the state is a tuple of states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **hyper):
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params, **hyper)
            new_state.append(s)
        return updates, tuple(new_state)

    def describe(spec, slot):
        # A nested chain would need nested slots; only flat chains get a closed form.
        if slot != -1:
            return None
        for i, t in enumerate(transforms):
            spec = t.describe(spec, i)
            if spec is None:
                return None
        return spec

    return InnerTransform(init, update, describe)


def recurrence_spec(opt: InnerTransform) -> RecurrenceSpec | None:
    """The canonical recurrence of an inner optimizer, or None if it has no closed form."""
    spec = opt.describe(RecurrenceSpec(), -1)
    if spec is None or not spec.has_step:
        return None
    return spec


# -- complete inner optimizers -----------------------------------------------------------------

def gd(retention: bool = True, normalize: bool | str = False,
       retain_to_init: bool = False) -> InnerTransform:
    """GD with retention: `M_t = α_t M_{t−1} − η_t ∇ℓ` (design §2.1; α ≡ 1 without retention).

    `retain_to_init`: decay toward the initial state (`add_retention(to_init=True)`)."""
    parts = [scale_by_step_size(normalize)]
    if retention:
        parts.append(add_retention(retain_to_init))
    return chain(*parts)


def momentum_gd(retention: bool = True, normalize: bool | str = False,
                dampening: bool = False, retain_to_init: bool = False) -> InnerTransform:
    """Momentum: `S_t = β_t S_{t−1} − η_t ∇ℓ`, `M_t = α_t M_{t−1} + S_t`
    (design §2.2; Titans Eq. 18).

    `dampening`: `S_t = β_t S_{t−1} − (1 − β_t) η_t ∇ℓ` (see `trace_momentum`)."""
    parts = [scale_by_step_size(normalize), trace_momentum(dampening)]
    if retention:
        parts.append(add_retention(retain_to_init))
    return chain(*parts)


def dgd(momentum: bool = True, retention: bool = True, normalize: bool | str = True,
        gated: bool = False, dampening: bool = False, retain_to_init: bool = False
        ) -> InnerTransform:
    """DGD (design §2.3, Eq. 88; D3, D5): `S_t = β S − η' ∇ℓ`, `M_t = M_{t−1}(α I − η' k kᵀ) + S_t`.

    η' = η/(1+η‖k‖²) in both places when `normalize` (default); with `normalize="curvature"`
    η' = η/(1+ηρ) in both places (`curvature_step_size`). Without momentum the write is
    `M_{t−1}(α I − η' k kᵀ) − η' ∇ℓ`. The preconditioner acts on the input-side layer only (D3).
    `dampening`: momentum as an exponential average (see `trace_momentum`); `retain_to_init`:
    α decays the state toward its initial value (see `add_retention`).
    """
    parts = [scale_by_step_size(normalize)]
    if momentum:
        parts.append(trace_momentum(dampening))
    if retention:
        parts.append(add_retention(retain_to_init))
    parts.append(add_dgd_preconditioner(normalize=normalize, gated=gated))
    return chain(*parts)
