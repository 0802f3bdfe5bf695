"""Runs an optax transform over a gradient stream and compares trees (shared by the optim tests)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Shapes used by the recurrence tests: a wide matrix, a tall matrix (NS transposes it), a vector.
SHAPES = {"w": (4, 6), "t": (6, 3), "v": (5,)}


def run(tx: optax.GradientTransformation, grads: list[dict], params: dict | None = None,
        jit: bool = True):
    """Feeds `grads` to `tx` one step at a time; returns the per-step outputs as numpy dicts."""
    grads_j = [jax.tree.map(jnp.asarray, g) for g in grads]
    if params is None:
        params = jax.tree.map(jnp.zeros_like, grads_j[0])
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    outs = []
    for g in grads_j:
        u, state = update(g, state, params)
        outs.append(jax.tree.map(np.asarray, u))
    return outs, state


def assert_trees_close(actual, expected, rtol=1e-10, atol=1e-10):
    """Leaf-wise `np.testing.assert_allclose` over two trees (or lists of trees) of equal
    structure."""
    leaves_a, tree_a = jax.tree.flatten(actual)
    leaves_e, tree_e = jax.tree.flatten(expected)
    assert tree_a == tree_e, (tree_a, tree_e)
    for a, e in zip(leaves_a, leaves_e):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)
