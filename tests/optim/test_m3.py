"""Tests of hope_jax/optim/m3.py (design §2.9, Algorithm 1; D15)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import SHAPES, assert_trees_close, run



def _no_ns(tree):
    return jax.tree.map(lambda _: False, tree)


@pytest.mark.fast
def test_ema_form_matches_numpy(x64):
    """Default form (EMA + bias correction, D15), f = 2: directions and O2 equal Algorithm 1 in
    numpy over 5 steps."""
    grads = ref.gradient_stream(40, SHAPES)
    outs, state = run(ho.scale_by_m3(0.9, 0.99, 0.8, alpha=0.5, slow_period=2), grads)
    expected, o2s = ref.m3(grads, 0.9, 0.99, 0.8, 0.5, 2, 1e-8)
    assert_trees_close(outs, expected)
    assert_trees_close(state.o2, o2s[-1])


def test_printed_form_matches_numpy(x64):
    """Printed form (plain accumulators, no bias correction), f = 2: equals numpy over 5 steps."""
    grads = ref.gradient_stream(41, SHAPES)
    outs, _ = run(ho.scale_by_m3(0.9, 0.99, 0.8, alpha=0.5, slow_period=2, form="printed"), grads)
    expected, _ = ref.m3(grads, 0.9, 0.99, 0.8, 0.5, 2, 1e-8, printed=True)
    assert_trees_close(outs, expected)


@pytest.mark.fast
def test_alpha_zero_identity_ns_is_adam(x64):
    """α = 0 and NS replaced by the identity: M3 equals optax.adam (no weight decay) to machine
    precision (design §2.9 (a))."""
    grads = ref.gradient_stream(42, SHAPES, steps=6)
    ours, _ = run(ho.m3(1e-2, beta1=0.9, beta2=0.999, alpha=0.0, slow_period=3, ns_mask=_no_ns),
                  grads)
    theirs, _ = run(optax.adam(1e-2, b1=0.9, b2=0.999, eps=1e-8), grads)
    assert_trees_close(ours, theirs, rtol=1e-14, atol=1e-15)


def test_o2_changes_only_at_multiples_of_f(x64):
    """O2 (and M2) change exactly at steps t with t mod f == 0 and stay fixed in between (design
    §2.9 (b))."""
    f = 3
    grads = ref.gradient_stream(43, SHAPES, steps=10)
    tx = ho.scale_by_m3(slow_period=f)
    state = tx.init(jax.tree.map(jnp.zeros_like, grads[0]))
    update = jax.jit(tx.update)
    previous = state.o2
    for t, g in enumerate(grads, start=1):
        _, state = update(jax.tree.map(jnp.asarray, g), state)
        changed = [not np.array_equal(a, b)
                   for a, b in zip(jax.tree.leaves(state.o2), jax.tree.leaves(previous))]
        assert all(changed) if t % f == 0 else not any(changed), t
        previous = state.o2


def test_bias_corrected_fast_momentum_of_constant_gradient(x64):
    """For a constant gradient c, the bias-corrected M̂1 = M1/(1 − β₁ᵗ) equals c at every step
    (design §2.9 (c))."""
    c = {k: np.full(s, 0.37) for k, s in SHAPES.items()}
    tx = ho.scale_by_m3(beta1=0.9)
    state = tx.init(jax.tree.map(jnp.zeros_like, c))
    update = jax.jit(tx.update)
    for t in range(1, 8):
        _, state = update(jax.tree.map(jnp.asarray, c), state)
        for k in c:
            np.testing.assert_allclose(np.asarray(state.m1[k]) / (1 - 0.9**t), c[k], rtol=1e-13)


def test_slow_momentum_contributes_after_first_period(x64):
    """With α > 0 the update differs from α = 0 only from step f + 1 on (O2 is used from the step
    after it is written)."""
    f = 2
    grads = ref.gradient_stream(44, SHAPES, steps=4)
    with_slow, _ = run(ho.scale_by_m3(alpha=1.0, slow_period=f), grads)
    without, _ = run(ho.scale_by_m3(alpha=0.0, slow_period=f), grads)
    assert_trees_close(with_slow[:f], without[:f], rtol=0, atol=0)
    assert not np.allclose(with_slow[f]["w"], without[f]["w"])
