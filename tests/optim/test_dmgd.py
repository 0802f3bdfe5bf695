"""Tests of hope_jax/optim/dmgd.py (design §2.6, Eq. 50; D28)."""
from __future__ import annotations

import numpy as np
import optax
import pytest

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import SHAPES, assert_trees_close, run


@pytest.mark.fast
def test_dot_objective_matches_numpy(x64):
    """Dot objective: memory b + w₁σ(w₂u) (h = 8, GELU), one GD step on φ per gradient, output
    d_{φ_{i+1}}(u_i): equals the numpy recurrence over 5 steps."""
    grads = ref.gradient_stream(20, SHAPES)
    tx = ho.scale_by_dmgd(beta=0.9, inner_lr=0.3, w1_init=0.1)
    outs, _ = run(tx, grads)
    assert_trees_close(outs, ref.dmgd(grads, 0.9, 0.3, 1.0, ho.DEFAULT_W2_INIT, w1_init=0.1))


def test_l2_objective_matches_numpy(x64):
    """L2 objective ½‖d − u‖² (with buffer step ζ_b = 0.5): equals the numpy recurrence over 5
    steps."""
    grads = ref.gradient_stream(21, SHAPES)
    tx = ho.scale_by_dmgd(beta=0.95, inner_lr=0.2, buffer_lr=0.5, objective="l2", w1_init=0.05)
    outs, _ = run(tx, grads)
    expected = ref.dmgd(grads, 0.95, 0.2, 0.5, ho.DEFAULT_W2_INIT, w1_init=0.05, objective="l2")
    assert_trees_close(outs, expected)


def test_frozen_zero_w1_is_momentum(x64):
    """With w₁ = 0 frozen, DMGD equals momentum exactly: dmgd(η, β) == optax.sgd(η, momentum=β)
    (design §2.6)."""
    grads = ref.gradient_stream(22, SHAPES)
    ours, _ = run(ho.dmgd(0.05, beta=0.9, w1_init=0.0, train_memory=False), grads)
    theirs, _ = run(optax.sgd(0.05, momentum=0.9), grads)
    assert_trees_close(ours, theirs, rtol=0, atol=0)


def test_memory_learns_and_stays_finite(x64):
    """With the default trainable memory, w₁ moves away from 0 and every state stays finite."""
    grads = ref.gradient_stream(23, SHAPES)
    _, state = run(ho.scale_by_dmgd(), grads)
    assert all(np.abs(np.asarray(w)).max() > 0 for w in state.w1.values())
    assert all(np.isfinite(np.asarray(x)).all() for tree in state for x in tree.values())
