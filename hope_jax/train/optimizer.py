"""The outer optimizer from `config.optim` (spec §5.3, D9, D23, D31).

    g      ← clip_by_global_norm(g, clip_norm)                   (per update group, on update steps)
    s      ← AdamW direction: m̂/(√v̂ + ε) + λ·mask·θ             (b1, b2, eps; decoupled decay)
    θ      ← θ − η_t · s                                          (η_t: warm-up + cosine at the global step)

Multi-frequency (D9/D23): when `optim.multi_frequency` is on and the model has CMS outer levels
(`update_periods(model)` holds values > 1), the clip + AdamW part is wrapped per period group in
`hope_jax.optim.multi_frequency`: a level of period P accumulates its gradients and is written
only on steps P, 2P, … with their mean; its moments, weight decay and clipping act only then;
the learning rate is applied after, at the global step. With every period 1 the transform is
the plain optimizer, bit for bit.

Weight-decay rule (`decay_mask`): a parameter is decayed iff it has ndim ≥ 2, it is not the
embedding table (`embed`), and no path component names a norm (`*norm*`) or a scale/bias
(`scale`, `bias`). So kernels, LM head, memory initial states and CMS target maps are decayed;
norm scales (also per-head [H, d_h] ones), biases, gate biases ([H]) and scalars (ρ) are not.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from hope_jax import optim as hoptim

Params = Mapping[str, jax.Array]


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
        raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {optim_cfg.schedule!r}")
    decay_steps = max(int(total_steps), warmup + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=decay_steps,
        end_value=lr * float(optim_cfg.min_lr_ratio))


def is_decayed(name: str, ndim: int) -> bool:
    """The weight-decay rule (module docstring) for a flat parameter name like
    'blocks/0/mlp/levels/1/w_up/kernel'."""
    parts = name.split("/")
    if ndim < 2 or parts[0] == "embed":
        return False
    return not any("norm" in p or p in ("scale", "bias") for p in parts)


def decay_mask(params: Params) -> dict[str, bool]:
    """{name: decayed?} for a flat parameter dict (see `is_decayed`)."""
    return {k: is_decayed(k, jnp.ndim(v)) for k, v in params.items()}


def _masked_decay_fn(tree):
    """Decay mask of a (possibly partitioned, MaskedNode-holding) flat param dict."""
    return {k: (v if not hasattr(v, "ndim") else is_decayed(k, v.ndim)) for k, v in tree.items()}


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
      inner: replaces the clip + AdamW direction (tests use `optax.identity()`: plain SGD).
    """
    if optim_cfg.name != "adamw":
        raise ValueError(f"optim.name must be 'adamw' (the only outer optimizer wired into the "
                         f"trainer), got {optim_cfg.name!r}")
    schedule = lr_schedule(optim_cfg, total_steps)
    parts: list[optax.GradientTransformation] = []
    if float(optim_cfg.clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(optim_cfg.clip_norm)))
    parts.append(optax.scale_by_adam(b1=float(optim_cfg.b1), b2=float(optim_cfg.b2),
                                     eps=float(optim_cfg.eps)))
    if float(optim_cfg.weight_decay) > 0:
        parts.append(optax.add_decayed_weights(float(optim_cfg.weight_decay), mask=_masked_decay_fn))
    inner = optax.chain(*parts) if inner is None else inner
    if optim_cfg.multi_frequency and periods and any(int(p) > 1 for p in periods.values()):
        labels, label_periods = period_labels(periods)
        return hoptim.multi_frequency(inner, labels, label_periods, reduction="mean",
                                      learning_rate=schedule), schedule
    return optax.chain(inner, optax.scale_by_learning_rate(schedule)), schedule


__all__ = ["decay_mask", "is_decayed", "lr_schedule", "make_optimizer", "period_labels"]
