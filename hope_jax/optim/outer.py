"""The outer optimizer from `config.optim` (design §5.3, D9, D23, D31; design §2.5–2.9).

    g ← clip_by_global_norm(g, clip_norm)                    (per update group, on update steps)
    s ← direction(g)                                          (optim.name, below)
    s ← s + λ · mask ⊙ θ                                      (decoupled weight decay)
    θ ← θ − η_t · s                                      (η_t: warm-up + cosine, global step)

`optim.name` picks the direction (`OPTIMIZERS`; every one is a `hope_jax.optim` transform):

  adamw           m̂/(√v̂ + ε)  (b1, b2, eps)
  muon            NS_T(β s + g) on hidden matrices; every other leaf takes the fallback
                  (`optim.fallback`: "adamw" = the AdamW direction, "momentum" = Muon's own
                  un-orthogonalised momentum)
  m3              Algorithm 1 (b1, b2, β₃ = 0.99, `m3_slow_period`); NS on hidden matrices, the
                  other leaves use M̂1, M̂2 themselves (Adam-like)
  delta_momentum  β s − γ⟨s, ĝ⟩ĝ + g  (β = `momentum`, γ = `delta_gamma`)
  dmgd            deep momentum (b + w₁ σ(w₂ u), h = 8; β = `momentum`)

Newton–Schulz acts only on hidden matrices (`is_hidden_matrix`): 2-D weights (a leading block axis
of `scan_blocks` allowed) that are not the embedding, the LM head, persistent tokens, norms,
biases, convolutions, memory initial states or gate heads.

Multi-frequency (D9/D23): when `optim.multi_frequency` is on and the model has CMS outer levels
(`update_periods(model)` holds values > 1), clip + direction + decay run per period group in
`hope_jax.optim.multi_frequency`: a level of period P accumulates its gradients and is written
only on steps P, 2P, … with their mean; its moments, weight decay and clipping act only then;
the learning rate is applied after, at the global step. With every period 1 the transform is
the plain optimizer, bit for bit.

Weight-decay rule (`is_decayed`): see the function.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hope_jax import optim as hoptim

Params = Mapping[str, jax.Array]

OPTIMIZERS = ("adamw", "muon", "m3", "delta_momentum", "dmgd")
FALLBACKS = ("adamw", "momentum")
SCHEDULES = ("cosine", "constant")
# Path components of meta-learned initial memory states and gate heads (self-modifying mixer:
# `memories`, `gate_heads`; memory mixers: `memory0`).
MEMORY_INIT_PARTS = ("memories", "memory0", "gate_heads")
# Path substrings that never get Newton–Schulz (besides rank and the memory-init parts).
NS_EXCLUDE = ("embed", "lm_head", "persistent", "norm", "scale", "bias", "conv")


def lr_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    """Linear warm-up over `warmup_steps` to `lr`, then cosine to `min_lr_ratio·lr` at
    `total_steps` (D31), or constant after warm-up (`schedule="constant"`)."""
    lr = float(optim_cfg.lr)
    warmup = max(int(optim_cfg.warmup_steps), 0)
    if optim_cfg.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if optim_cfg.schedule != "cosine":
        raise ValueError(f"optim.schedule: expected one of {SCHEDULES}, got {optim_cfg.schedule!r}")
    decay_steps = max(int(total_steps), warmup + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=decay_steps,
        end_value=lr * float(optim_cfg.min_lr_ratio))


def core_ndim(name: str, ndim: int) -> int:
    """Rank without the leading block axis that `scan_blocks` stacks on 'blocks/…' leaves
    (unrolled blocks are named 'blocks/<i>/…')."""
    parts = name.split("/")
    stacked = len(parts) > 1 and parts[0] == "blocks" and not parts[1].isdigit()
    return ndim - 1 if stacked else ndim


def is_memory_init(name: str) -> bool:
    """A meta-learned initial memory state or gate head (`MEMORY_INIT_PARTS`)."""
    return any(p in MEMORY_INIT_PARTS for p in name.split("/"))


def is_decayed(name: str, ndim: int, decay_memory_init: bool = False) -> bool:
    """The weight-decay rule for a flat parameter name like 'blocks/0/mlp/levels/1/w_up/kernel'.

    Decayed iff the leaf is a matrix (rank ≥ 2 without a scanned block axis), it is not the
    embedding table (`embed`) nor persistent tokens (`persistent`), no path component names a
    norm (`*norm*`) or a scale/bias, and, unless `decay_memory_init`, it is not a meta-learned
    initial memory state or gate head (`is_memory_init`). So kernels, the LM head, convolutions
    and CMS target maps decay; norm scales, biases, gate biases, scalars (ρ), the embedding,
    persistent tokens, M_0 and gate heads do not.
    """
    parts = name.split("/")
    if core_ndim(name, ndim) < 2 or parts[0] == "embed" or "persistent" in parts:
        return False
    if any("norm" in p or p in ("scale", "bias") for p in parts):
        return False
    return decay_memory_init or not is_memory_init(name)


def is_hidden_matrix(name: str, ndim: int) -> bool:
    """Newton–Schulz applies (Muon, M3): a 2-D weight (stacked blocks allowed) that is not an
    embedding, the LM head, persistent tokens, a norm, bias, conv, memory init or gate head."""
    low = name.lower()
    return (core_ndim(name, ndim) == 2 and not is_memory_init(name)
            and not any(e in low for e in NS_EXCLUDE))


def decay_mask(params: Params, decay_memory_init: bool = False) -> dict[str, bool]:
    """{name: decayed?} for a flat parameter dict (see `is_decayed`)."""
    return {k: is_decayed(k, jnp.ndim(v), decay_memory_init) for k, v in params.items()}


def _leafwise(rule: Callable[[str, int], Any]) -> Callable[[dict], dict]:
    """`rule(name, ndim)` on every array of a flat dict; optax's MaskedNode entries (leaves of
    other partition groups) are kept as they are."""
    return lambda tree: {k: (rule(k, v.ndim) if hasattr(v, "ndim") else v)
                         for k, v in tree.items()}


def _masked_decay_fn(decay_memory_init: bool = False) -> Callable[[dict], dict]:
    return _leafwise(lambda k, n: is_decayed(k, n, decay_memory_init))


ns_mask_fn = _leafwise(is_hidden_matrix)


def _adam(c) -> optax.GradientTransformation:
    return optax.scale_by_adam(b1=float(c.b1), b2=float(c.b2), eps=float(c.eps))


def _muon(c) -> optax.GradientTransformation:
    beta, steps = float(c.momentum), int(c.ns_steps)
    if c.fallback == "momentum":
        return hoptim.scale_by_muon(beta, ns_steps=steps, ns_mask=ns_mask_fn)
    everywhere = _leafwise(lambda k, n: True)
    labels = _leafwise(lambda k, n: "ns" if is_hidden_matrix(k, n) else "fallback")
    muon = hoptim.scale_by_muon(beta, ns_steps=steps, ns_mask=everywhere)
    return optax.partition({"ns": muon, "fallback": _adam(c)}, labels)


def direction(c) -> optax.GradientTransformation:
    """The descent direction of `optim.name` (module docstring), without clip, decay and lr."""
    if c.name == "adamw":
        return _adam(c)
    if c.name == "muon":
        return _muon(c)
    if c.name == "m3":
        return hoptim.scale_by_m3(float(c.b1), float(c.b2), slow_period=int(c.m3_slow_period),
                                  eps=float(c.eps), ns_steps=int(c.ns_steps), ns_mask=ns_mask_fn)
    if c.name == "delta_momentum":
        return hoptim.scale_by_delta_momentum(float(c.momentum), float(c.delta_gamma))
    if c.name == "dmgd":
        return hoptim.scale_by_dmgd(float(c.momentum))
    raise ValueError(f"config.optim.name: expected one of {OPTIMIZERS}, got {c.name!r}")


def period_labels(periods: Mapping[str, int]) -> tuple[dict[str, str], dict[str, int]]:
    """Flat {name: P} → ({name: 'period_P'}, {'period_P': P})."""
    labels = {k: f"period_{int(p)}" for k, p in periods.items()}
    return labels, {f"period_{int(p)}": int(p) for p in periods.values()}


def make_optimizer(optim_cfg, total_steps: int, periods: Mapping[str, int] | None = None, *,
                   inner: optax.GradientTransformation | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The outer optimizer (module docstring) and its learning-rate schedule.

    Args:
      optim_cfg: `config.optim`.
      total_steps: `train.steps` (end of the cosine).
      periods: flat {param name: CMS update period} (from `update_periods(model)`), or None.
      inner: replaces clip + direction + decay (tests use `optax.identity()`: plain SGD).
    """
    if optim_cfg.name not in OPTIMIZERS:
        raise ValueError(f"config.optim.name: expected one of {OPTIMIZERS}, got {optim_cfg.name!r}")
    schedule = lr_schedule(optim_cfg, total_steps)
    if inner is None:
        parts: list[optax.GradientTransformation] = []
        if float(optim_cfg.clip_norm) > 0:
            parts.append(optax.clip_by_global_norm(float(optim_cfg.clip_norm)))
        parts.append(direction(optim_cfg))
        if float(optim_cfg.weight_decay) > 0:
            parts.append(optax.add_decayed_weights(
                float(optim_cfg.weight_decay),
                mask=_masked_decay_fn(bool(optim_cfg.decay_memory_init))))
        inner = optax.chain(*parts)
    if optim_cfg.multi_frequency and periods and any(int(p) > 1 for p in periods.values()):
        labels, label_periods = period_labels(periods)
        return hoptim.multi_frequency(inner, labels, label_periods, reduction="mean",
                                      learning_rate=schedule,
                                      lr_exponent=float(optim_cfg.cms_lr_exponent)), schedule
    return optax.chain(inner, optax.scale_by_learning_rate(schedule)), schedule


__all__ = ["FALLBACKS", "MEMORY_INIT_PARTS", "OPTIMIZERS", "SCHEDULES", "core_ndim", "decay_mask",
           "direction", "is_decayed", "is_hidden_matrix", "is_memory_init", "lr_schedule",
           "make_optimizer", "ns_mask_fn", "period_labels"]
