"""M3: Multi-scale Momentum Muon (design §2.9, Algorithm 1, Eq. 75; D15).

An Adam-style second moment, a fast Muon momentum and a slow momentum updated once every `f`
steps from the mean gradient of its chunk (a 2-level CMS of the independent kind). Default form,
EMA momenta with bias correction (D15), for step t = 1, 2, …:

    M1 = β₁ M1 + (1−β₁) g;        V = β₂ V + (1−β₂) g²
    M̂1 = M1/(1−β₁ᵗ);              V̂ = V/(1−β₂ᵗ);         O1 = NS_T(M̂1)
    Θ ← Θ − η [ (O1 + α O2)/(√V̂ + ε) + λ Θ ]
    G ← G + g
    if t mod f == 0:  k += 1;  M2 = β₃ M2 + (1−β₃) G/f;  O2 = NS_T(M2/(1−β₃ᵏ));  G = 0

Printed form (`form="printed"`): `M1 += β₁ g`, `V += β₂ g²`, `M2 += β₃ G` once per chunk,
`O1 = NS_T(M1)`, `O2 = NS_T(M2)`, no bias correction; update `(O1 + α O2)/(√V + ε)`.
The slow `O2` computed at step t is used from step t+1. Leaves that skip NS (vectors, embeddings,
LM head: D29) use `M̂1`, `M̂2` themselves.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim._util import bias_correction, with_learning_rate
from hope_jax.optim.newton_schulz import (
    DEFAULT_NS_EXCLUDE,
    Coefficients,
    MaskOrFn,
    orthogonalize_tree,
    resolve_mask,
)

M3Form = Literal["ema", "printed"]


class M3State(NamedTuple):
    """State of `scale_by_m3`."""

    count: jax.Array  # int32 scalar t: steps taken
    m1: optax.Updates  # fast momentum M1
    v: optax.Updates  # second moment V
    m2: optax.Updates  # slow momentum M2
    o2: optax.Updates  # NS_T of the (bias-corrected) slow momentum, used by the next f steps
    g_sum: optax.Updates  # G: gradients summed since the last slow update


# Kept as one function (issue 20): its length is the nested init/update closures of the optax
# transform, which read the M3 equations (fast/slow momenta, NS_T, the slow period) in order.
def scale_by_m3(
    beta1: float = 0.9,
    beta2: float = 0.95,
    beta3: float = 0.99,
    alpha: float = 1.0,
    slow_period: int = 16,
    eps: float = 1e-8,
    form: M3Form = "ema",
    ns_steps: int = 5,
    ns_coefficients: Coefficients = "quintic",
    ns_eps: float = 1e-7,
    ns_mask: MaskOrFn = None,
    ns_exclude: Sequence[str] = DEFAULT_NS_EXCLUDE,
    shape_scale: bool = False,
    ns_dtype: str | None = None,
) -> optax.GradientTransformation:
    """M3's direction `(O1 + α O2)/(√V̂ + ε)` (NL Algorithm 1, D15).

    Args:
      beta1, beta2, beta3: decays of the fast momentum, the second moment and the slow momentum.
      alpha: weight α ≥ 0 of the slow momentum (a mixing weight, not a retention).
      slow_period: f, the slow momentum's period in steps (may be traced).
      eps: ε added to `√V̂`.
      form: "ema" (D15 default) or "printed" (Algorithm 1's plain accumulators).
      ns_*: Newton–Schulz settings, as in `scale_by_newton_schulz` (a mask with every leaf False
        replaces NS by the identity).
    """
    if form not in ("ema", "printed"):
        raise ValueError(f"form must be 'ema' or 'printed', got {form!r}")
    ema = form == "ema"

    def ns(tree, mask):
        return orthogonalize_tree(tree, mask, ns_steps, ns_coefficients, ns_eps, shape_scale,
                                  ns_dtype)

    def init_fn(params: optax.Params) -> M3State:
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return M3State(count=jnp.zeros([], jnp.int32), m1=zeros(), v=zeros(), m2=zeros(),
                       o2=zeros(), g_sum=zeros())

    def update_fn(updates, state, params=None):
        del params
        mask = resolve_mask(updates, ns_mask, ns_exclude)
        t = optax.safe_int32_increment(state.count)
        if ema:  # D15: EMA momenta with bias correction
            m1 = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * g, state.m1, updates)
            v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.v, updates)
            m1_hat = jax.tree.map(lambda m: bias_correction(m, beta1, t), m1)
            v_hat = jax.tree.map(lambda v: bias_correction(v, beta2, t), v)
        else:  # Algorithm 1 as printed: plain accumulators
            m1 = jax.tree.map(lambda m, g: m + beta1 * g, state.m1, updates)
            v = jax.tree.map(lambda v, g: v + beta2 * g * g, state.v, updates)
            m1_hat, v_hat = m1, v
        o1 = ns(m1_hat, mask)
        # NL Algorithm 1: Θ ← Θ − η (O1 + α O2)/(√V̂ + ε)   (η, λ applied by the caller's chain)
        direction = jax.tree.map(
            lambda a, b, v: (a + alpha * b) / (jnp.sqrt(v) + eps), o1, state.o2, v_hat
        )
        g_sum = jax.tree.map(jnp.add, state.g_sum, updates)

        def slow_update(operands):  # t mod f == 0: the slow level writes (Eq. 75 / Alg. 1)
            m2, _, g_sum = operands
            if ema:
                k = t // slow_period
                m2 = jax.tree.map(lambda m, G: beta3 * m + (1 - beta3) * G / slow_period, m2, g_sum)
                m2_hat = jax.tree.map(lambda m: bias_correction(m, beta3, k), m2)
            else:
                m2 = jax.tree.map(lambda m, G: m + beta3 * G, m2, g_sum)
                m2_hat = m2
            return m2, ns(m2_hat, mask), jax.tree.map(jnp.zeros_like, g_sum)

        m2, o2, g_sum = jax.lax.cond(
            t % slow_period == 0, slow_update, lambda operands: operands,
            (state.m2, state.o2, g_sum),
        )
        return direction, M3State(count=t, m1=m1, v=v, m2=m2, o2=o2, g_sum=g_sum)

    return optax.GradientTransformation(init_fn, update_fn)


def m3(
    learning_rate: optax.ScalarOrSchedule,
    beta1: float = 0.9,
    beta2: float = 0.95,
    beta3: float = 0.99,
    alpha: float = 1.0,
    slow_period: int = 16,
    eps: float = 1e-8,
    form: M3Form = "ema",
    ns_steps: int = 5,
    ns_coefficients: Coefficients = "quintic",
    ns_eps: float = 1e-7,
    ns_mask: MaskOrFn = None,
    ns_exclude: Sequence[str] = DEFAULT_NS_EXCLUDE,
    shape_scale: bool = False,
    ns_dtype: str | None = None,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Complete M3 optimizer `Θ ← Θ − η[(O1 + αO2)/(√V̂ + ε) + λΘ]` (NL Algorithm 1, D15)."""
    return with_learning_rate(
        scale_by_m3(beta1, beta2, beta3, alpha, slow_period, eps, form, ns_steps, ns_coefficients,
                    ns_eps, ns_mask, ns_exclude, shape_scale, ns_dtype),
        learning_rate,
        weight_decay,
    )
