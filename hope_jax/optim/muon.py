"""Muon: linear momentum with a Newton–Schulz output (design §2.7, Eq. 42; D29).

    s_{t+1} = β s_t + g_t,      W_{t+1} = W_t − η (NS_T(s_{t+1}) + λ W_t)

Muon's own form with the learning rate outside NS (design §2.7: NS is scale-invariant, so NL's
printed η inside the momentum would be lost). Equal to NL's `m = β m − ∇L`, `W + η NS(m)` since NS
is odd. Non-matrix leaves, embeddings and the LM head skip NS (D29) and take the plain momentum.
"""
from __future__ import annotations

from collections.abc import Sequence

import optax

from hope_jax.optim._util import with_learning_rate
from hope_jax.optim.newton_schulz import DEFAULT_NS_EXCLUDE, Coefficients, MaskOrFn, orthogonalize
from hope_jax.optim.preconditioned_momentum import scale_by_preconditioned_momentum


def scale_by_muon(
    beta: float = 0.95,
    nesterov: bool = False,
    ns_steps: int = 5,
    ns_coefficients: Coefficients = "quintic",
    ns_eps: float = 1e-7,
    ns_mask: MaskOrFn = None,
    ns_exclude: Sequence[str] = DEFAULT_NS_EXCLUDE,
    shape_scale: bool = False,
    ns_dtype: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Muon's direction `NS_T(s)`, `s ← β s + g` (NL Eq. 42). Args as in
    `scale_by_newton_schulz`."""
    return orthogonalize(
        scale_by_preconditioned_momentum(beta, None, nesterov),
        ns_steps, ns_coefficients, ns_eps, ns_mask, ns_exclude, shape_scale, ns_dtype,
    )


def muon(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.95,
    nesterov: bool = False,
    ns_steps: int = 5,
    ns_coefficients: Coefficients = "quintic",
    ns_eps: float = 1e-7,
    ns_mask: MaskOrFn = None,
    ns_exclude: Sequence[str] = DEFAULT_NS_EXCLUDE,
    shape_scale: bool = False,
    ns_dtype: str | None = None,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Complete Muon optimizer `W ← W − η (NS_T(s) + λW)` (NL Eq. 42, D29).

    Args:
      learning_rate: η, a float or an optax schedule (evaluated at the global step).
      beta: momentum decay (Muon's 0.95).
      nesterov: use the Nesterov form `β s_{t+1} + g` as NS input (off: design §2.7's plain form).
      ns_steps, ns_coefficients, ns_eps, ns_dtype: Newton–Schulz settings (D29: 5, quintic, fp32).
      ns_mask, ns_exclude: which leaves get NS (default: rank ≥ 2, not embedding / LM head).
      shape_scale: multiply NS output by `√max(1, rows/cols)`.
      weight_decay: decoupled weight decay λ.
    """
    return with_learning_rate(
        scale_by_muon(beta, nesterov, ns_steps, ns_coefficients, ns_eps, ns_mask, ns_exclude,
                      shape_scale, ns_dtype),
        learning_rate,
        weight_decay,
    )
