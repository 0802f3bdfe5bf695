"""Tests of hope_jax/optim/preconditioned_momentum.py (design §2.4, Eq. 47)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import SHAPES, assert_trees_close, run


@pytest.mark.fast
@pytest.mark.parametrize("nesterov", [False, True])
def test_identity_preconditioner_matches_numpy(x64, nesterov):
    """P = I: the transform equals the recurrence s ← βs + g (Nesterov: output βs + g) over 5
    steps."""
    grads = ref.gradient_stream(0, SHAPES)
    outs, _ = run(ho.scale_by_preconditioned_momentum(beta=0.8, nesterov=nesterov), grads)
    assert_trees_close(outs, ref.preconditioned_momentum(grads, 0.8, nesterov=nesterov))


def test_diagonal_preconditioner_matches_numpy(x64):
    """P = 1/(√v̂ + ε): the transform equals s ← βs + g/(√v̂ + ε) with bias-corrected v over 5
    steps."""
    grads = ref.gradient_stream(1, SHAPES)
    outs, _ = run(ho.scale_by_preconditioned_momentum(beta=0.7, preconditioner="diagonal"), grads)
    assert_trees_close(outs, ref.preconditioned_momentum(grads, 0.7, diagonal=True))


def test_pluggable_preconditioner(x64):
    """Any optax transform can be P: with P = scale(2) the momentum is twice that of P = I."""
    grads = ref.gradient_stream(2, SHAPES)
    outs, _ = run(ho.scale_by_preconditioned_momentum(beta=0.5, preconditioner=optax.scale(2.0)),
                  grads)
    expected = ref.preconditioned_momentum([{k: 2 * v for k, v in g.items()} for g in grads], 0.5)
    assert_trees_close(outs, expected)


def test_complete_optimizer_equals_optax_sgd(x64):
    """preconditioned_momentum(η, β) with P = I equals optax.sgd(η, momentum=β) (design §2.4, and
    §1, check c)."""
    grads = ref.gradient_stream(3, SHAPES)
    ours, _ = run(ho.preconditioned_momentum(0.1, beta=0.9), grads)
    theirs, _ = run(optax.sgd(0.1, momentum=0.9), grads)
    assert_trees_close(ours, theirs)


def test_schedule_is_evaluated_at_global_step(x64):
    """A schedule multiplies the whole output at the step index: η_t s_t (the Muon placement)."""
    grads = ref.gradient_stream(4, SHAPES)
    schedule = optax.linear_schedule(1.0, 0.5, 4)
    ours, _ = run(ho.preconditioned_momentum(schedule, beta=0.9), grads)
    directions = ref.preconditioned_momentum(grads, 0.9)
    expected = [{k: -float(schedule(t)) * v for k, v in d.items()}
                for t, d in enumerate(directions)]
    assert_trees_close(ours, expected)


def test_weight_decay_is_decoupled(x64):
    """weight_decay λ adds λW to the direction before the learning rate: u = −η(s + λW)."""
    grads = ref.gradient_stream(5, SHAPES, steps=1)
    params = {k: jnp.asarray(np.full(s, 2.0)) for k, s in SHAPES.items()}
    ours, _ = run(ho.preconditioned_momentum(0.1, beta=0.9, weight_decay=0.01), grads,
                  params=params)
    assert_trees_close(ours[0], {k: -0.1 * (g + 0.01 * 2.0) for k, g in grads[0].items()})
