"""Tests of hope_jax/optim/multi_frequency.py (design §5.3 outer CMS levels; D9, D23)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import SHAPES, assert_trees_close, run


def _adamw_without_lr():
    return optax.chain(optax.scale_by_adam(b1=0.9, b2=0.95), optax.add_decayed_weights(0.1))


def _params():
    return {k: jnp.asarray(np.random.default_rng(50).standard_normal(s)) for k, s in SHAPES.items()}


@pytest.mark.fast
def test_period_one_is_the_wrapped_optimizer_exactly(x64):
    """update_every(inner, 1) and multi_frequency with every period 1 equal `inner` bit for bit."""
    grads = ref.gradient_stream(51, SHAPES, steps=5)
    params = _params()
    theirs, _ = run(optax.adamw(1e-2, weight_decay=0.1), grads, params)
    ours, _ = run(ho.update_every(optax.adamw(1e-2, weight_decay=0.1), 1), grads, params)
    assert_trees_close(ours, theirs, rtol=0, atol=0)
    labels = {"w": "slow", "t": "fast", "v": "fast"}
    ours, _ = run(ho.multi_frequency(_adamw_without_lr(), labels, {"slow": 1, "fast": 1},
                                     learning_rate=1e-2), grads, params)
    theirs, _ = run(optax.chain(_adamw_without_lr(), optax.scale_by_learning_rate(1e-2)), grads,
                    params)
    assert_trees_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.fast
def test_period_four_updates_every_fourth_step_with_mean(x64):
    """k = 4 with SGD: parameters change only at steps 4 and 8, each time by −η × mean of the 4
    gradients."""
    grads = ref.gradient_stream(52, SHAPES, steps=8)
    outs, _ = run(ho.update_every(optax.sgd(0.1), 4), grads)
    for t, u in enumerate(outs, start=1):
        if t % 4:
            assert all(np.all(x == 0) for x in u.values()), t
        else:
            window = grads[t - 4:t]
            assert_trees_close(u, {k: -0.1 * sum(g[k] for g in window) / 4 for k in u})


def test_sum_reduction(x64):
    """reduction='sum' applies the summed gradient of the period (Eq. 71's sum)."""
    grads = ref.gradient_stream(53, SHAPES, steps=3)
    outs, _ = run(ho.update_every(optax.sgd(1.0), 3, reduction="sum"), grads)
    assert_trees_close(outs[2], {k: -sum(g[k] for g in grads) for k in outs[2]})


def test_inner_state_advances_only_on_update_steps(x64):
    """Adam inside update_every(·, 2) on a stream equals Adam on the stream of pair means (D23:
    moments, weight decay act only on update steps)."""
    grads = ref.gradient_stream(54, SHAPES, steps=6)
    params = _params()
    ours, _ = run(ho.update_every(_adamw_without_lr(), 2), grads, params)
    means = [{k: (grads[i][k] + grads[i + 1][k]) / 2 for k in grads[i]} for i in range(0, 6, 2)]
    theirs, _ = run(_adamw_without_lr(), means, params)
    assert_trees_close(ours[1::2], theirs)


def test_lr_exponent_scales_a_slow_groups_steps_by_its_period_power(x64):
    """lr_exponent γ: the period-P group's write steps are P^γ times those of γ = 0 (Adam inside,
    so γ = 1 gives steps of the size a P = 1 group takes); P = 1 groups are untouched."""
    grads = ref.gradient_stream(56, SHAPES, steps=8)
    params = _params()
    labels = {"w": "slow", "t": "fast", "v": "fast"}
    base, _ = run(ho.multi_frequency(_adamw_without_lr(), labels, {"slow": 4},
                                     learning_rate=1e-2), grads, params)
    for gamma in (0.5, 1.0):
        scaled, _ = run(ho.multi_frequency(_adamw_without_lr(), labels, {"slow": 4},
                                           learning_rate=1e-2, lr_exponent=gamma), grads, params)
        for b, s in zip(base, scaled):
            np.testing.assert_allclose(s["w"], 4.0 ** gamma * b["w"], rtol=1e-12)
            np.testing.assert_array_equal(s["t"], b["t"])
    assert np.any(base[3]["w"] != 0)


def test_groups_with_labels_function_and_global_schedule(x64):
    """multi_frequency with a label function: the 'slow' group (matrices, P = 2) moves every 2nd
    step, the 'fast' group every step, and the LR schedule outside is evaluated at the global
    step."""
    grads = ref.gradient_stream(55, SHAPES, steps=4)
    schedule = optax.linear_schedule(1.0, 0.0, 4)
    label_fn = lambda p: jax.tree.map(lambda x: "slow" if x.ndim == 2 else "fast", p)
    outs, _ = run(ho.multi_frequency(optax.identity(), label_fn, {"slow": 2},
                                     learning_rate=schedule), grads)
    for t, u in enumerate(outs, start=1):
        eta = float(schedule(t - 1))
        np.testing.assert_allclose(u["v"], -eta * grads[t - 1]["v"], atol=1e-12)
        for k in ("w", "t"):
            expected = (-eta * (grads[t - 2][k] + grads[t - 1][k]) / 2 if t % 2 == 0
                        else 0 * grads[0][k])
            np.testing.assert_allclose(u[k], expected, atol=1e-12)


def test_per_label_transforms(x64):
    """A mapping {label: transform} gives each group its own optimizer and period."""
    grads = ref.gradient_stream(56, SHAPES, steps=2)
    labels = {"w": "a", "t": "b", "v": "b"}
    tx = ho.multi_frequency({"a": optax.sgd(1.0), "b": optax.sgd(0.5)}, labels, {"a": 2})
    outs, _ = run(tx, grads)
    np.testing.assert_allclose(outs[0]["w"], 0.0)
    np.testing.assert_allclose(outs[1]["w"], -(grads[0]["w"] + grads[1]["w"]) / 2, atol=1e-12)
    np.testing.assert_allclose(outs[0]["v"], -0.5 * grads[0]["v"], atol=1e-12)


def test_invalid_period_is_rejected():
    """A period that is not an int ≥ 1 raises ValueError with the group's name."""
    with pytest.raises(ValueError, match="slow"):
        ho.multi_frequency(optax.sgd(1.0), {"w": "slow"}, {"slow": 0})
