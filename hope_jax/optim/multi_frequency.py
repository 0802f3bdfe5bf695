"""Multi-frequency updates: parameter groups written every `P` steps (design §5.3, D9, D23).

CMS outer levels (design §5.3) are ordinary parameters updated only every `P` outer steps with the
mean of the gradients accumulated since their last update (D23):

    acc ← acc + g;  n ← n + 1
    if n mod P == 0:  updates, inner_state ← inner.update(acc / P, inner_state, params);  acc ← 0
    else:             updates ← 0   (inner_state unchanged: no moments, weight decay or clipping)

The learning-rate schedule must be evaluated at the *global* step, not at a group's update count,
so keep it outside: `chain(multi_frequency(adamw_without_lr, labels, periods),
scale_by_learning_rate(schedule))`, or pass `learning_rate=` which builds exactly that chain.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

Reduction = Literal["mean", "sum"]
LabelsOrFn = Any | Callable[[optax.Params], Any]


class UpdateEveryState(NamedTuple):
    """State of `update_every`."""

    phase: jax.Array  # int32 scalar n mod P: steps accumulated since the last update
    acc: optax.Updates  # gradients summed since the last update, shaped like the params
    inner: optax.OptState  # the wrapped transform's state (advances only on update steps)


def update_every(
    inner: optax.GradientTransformation,
    period: int | jax.Array,
    reduction: Reduction = "mean",
) -> optax.GradientTransformationExtraArgs:
    """Applies `inner` every `period` steps to the gradients accumulated since its last update.

    Args:
      inner: the optimizer of the group (typically without its learning rate: see module doc).
      period: P ≥ 1 (may be traced). P = 1 gives `inner` exactly.
      reduction: "mean" (`acc / P`, D23 default) or "sum" (`acc`, Eq. 71's sum).

    Returns:
      A transform emitting `inner`'s update on steps P, 2P, … and zeros in between.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> UpdateEveryState:
        return UpdateEveryState(
            phase=jnp.zeros([], jnp.int32),
            acc=jax.tree.map(jnp.zeros_like, params),
            inner=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        acc = jax.tree.map(jnp.add, state.acc, updates)
        phase = (state.phase + 1) % period

        def write(acc, inner_state):  # n mod P == 0: the level writes (design §5.3, Eq. 71)
            grads = jax.tree.map(lambda a: a / period, acc) if reduction == "mean" else acc
            new_updates, inner_state = inner.update(grads, inner_state, params, **extra_args)
            return new_updates, jax.tree.map(jnp.zeros_like, acc), inner_state

        out_shapes = jax.eval_shape(write, acc, state.inner)[0]

        def hold(acc, inner_state):  # otherwise: no update, inner state unchanged
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shapes)
            return zeros, acc, inner_state

        new_updates, acc, inner_state = jax.lax.cond(phase == 0, write, hold, acc, state.inner)
        return new_updates, UpdateEveryState(phase=phase, acc=acc, inner=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def multi_frequency(
    inner: optax.GradientTransformation | Mapping[Hashable, optax.GradientTransformation],
    labels: LabelsOrFn,
    periods: Mapping[Hashable, int],
    reduction: Reduction = "mean",
    learning_rate: optax.ScalarOrSchedule | None = None,
    lr_exponent: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Per-group multi-frequency optimizer for CMS outer levels (design §5.3, D9, D23).

    Args:
      inner: the optimizer every group uses (each group gets its own state), or a mapping
        `{label: transform}`. Leave its learning rate out and pass `learning_rate` here (or chain
        `scale_by_learning_rate` yourself) so a schedule sees the global step.
      labels: pytree of labels shaped like the params, or a function `params -> labels`.
      periods: `{label: P}`; labels missing from it are updated every step (P = 1).
      reduction: "mean" (D23) or "sum" of the accumulated gradients.
      learning_rate: if given, `scale_by_learning_rate(learning_rate)` is chained after, at the
        global step.
      lr_exponent: γ. A group of period P has its update steps scaled by P^γ. γ = 0 is D23:
        every write is an ordinary step, so a slow level takes P× fewer steps of the same size.
        γ = 1 moves it about as far in total as a level that steps every step, since Adam's
        steps do not depend on the gradient's scale (docs/hope.md, "Slow levels' step size").

    Transforms that couple leaves (e.g. clipping by global norm) act per group when placed in
    `inner`. A group of period 1 uses `inner` directly; if every period is 1 (and `inner` is one
    transform), the result is `inner` itself, applied to the whole tree.
    """
    for label, period in periods.items():
        if not isinstance(period, int) or isinstance(period, bool) or period < 1:
            raise ValueError(f"period of group {label!r} must be an int ≥ 1, got {period!r}")
    if isinstance(inner, optax.GradientTransformation) and all(p == 1 for p in periods.values()):
        # Every group is updated every step: no partition, so the result is `inner` bit for bit.
        partitioned = optax.with_extra_args_support(inner)
        if learning_rate is None:
            return partitioned
        return optax.chain(partitioned, optax.scale_by_learning_rate(learning_rate))
    if isinstance(inner, optax.GradientTransformation):
        group_tx = lambda label: inner
        group_labels = None
    else:
        group_tx = lambda label: inner[label]
        group_labels = set(inner)

    def slow_tx(label, period: int) -> optax.GradientTransformation:
        # a write step of P^γ times the inner one; γ = 0 keeps `inner` (and its state) as it is
        tx = group_tx(label)
        return tx if not lr_exponent else optax.chain(tx, optax.scale(period ** lr_exponent))

    def transforms_for(label_set) -> dict[Hashable, optax.GradientTransformation]:
        txs = {}
        for label in label_set:
            period = periods.get(label, 1)
            txs[label] = (group_tx(label) if period == 1
                          else update_every(slow_tx(label, period), period, reduction))
        return txs

    if group_labels is not None:
        partitioned = optax.partition(transforms_for(group_labels), labels)
    else:
        # The label set is only known from the params: build the partition lazily at init.
        partitioned = _partition_lazily(transforms_for, labels)
    if learning_rate is None:
        return optax.with_extra_args_support(partitioned)
    return optax.chain(partitioned, optax.scale_by_learning_rate(learning_rate))


def _partition_lazily(transforms_for, labels: LabelsOrFn) -> optax.GradientTransformationExtraArgs:
    """`optax.partition` whose label set is read from the labels of the params at init/update."""

    def build(tree):
        label_tree = labels(tree) if callable(labels) else labels
        label_set = sorted(set(jax.tree.leaves(label_tree)), key=repr)
        return optax.with_extra_args_support(optax.partition(transforms_for(label_set), labels))

    def init_fn(params):
        return build(params).init(params)

    def update_fn(updates, state, params=None, **extra_args):
        return build(updates).update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
