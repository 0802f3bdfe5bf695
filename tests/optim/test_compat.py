"""Every hope_jax.optim optimizer under jax.jit, optax.chain, optax.inject_hyperparams,
optax.MultiSteps, optax.masked, and with sharded state on a 2×4 CPU mesh (hope_jax/optim/*.py,
sharding.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import assert_trees_close, run

SHAPES = {"w": (4, 8), "t": (8, 4), "v": (12,)}
SPECS = {"w": P("data", "model"), "t": P("model", None), "v": P("model")}
STEPS = 4
TOL = dict(rtol=2e-5, atol=1e-6)


def _slow_matrices(tree):
    return jax.tree.map(lambda x: "slow" if jnp.ndim(x) == 2 else "fast", tree)


def multi_frequency_adamw(learning_rate):
    """CMS-style outer optimizer: AdamW without LR, matrices every 2nd step, LR outside."""
    inner = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(0.01))
    return ho.multi_frequency(inner, _slow_matrices, {"slow": 2}, learning_rate=learning_rate)


CASES = {
    "preconditioned_momentum": (ho.preconditioned_momentum, dict(learning_rate=0.1, beta=0.9)),
    "preconditioned_momentum_diagonal": (ho.preconditioned_momentum,
                                         dict(learning_rate=0.1, preconditioner="diagonal")),
    "delta_momentum": (ho.delta_momentum, dict(learning_rate=0.1)),
    "delta_momentum_matrix": (ho.delta_momentum, dict(learning_rate=0.1, form="matrix")),
    "dmgd": (ho.dmgd, dict(learning_rate=0.1, inner_lr=0.1)),
    "muon": (ho.muon, dict(learning_rate=0.05, weight_decay=0.01)),
    "m3": (ho.m3, dict(learning_rate=0.01, slow_period=2)),
    "multi_frequency": (multi_frequency_adamw, dict(learning_rate=0.01)),
}
NAMES = sorted(CASES)


def _make(name):
    factory, kwargs = CASES[name]
    return factory(**kwargs)


def _params():
    rng = np.random.default_rng(60)
    return {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}


def _grads(steps=STEPS):
    return [{k: v.astype(np.float32) for k, v in g.items()}
            for g in ref.gradient_stream(61, SHAPES, steps)]


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name):
    """Jitted update equals the eager (op-by-op) update over 3 steps."""
    grads, params = _grads(3), _params()
    eager, _ = run(_make(name), grads, params, jit=False)
    jitted, _ = run(_make(name), grads, params, jit=True)
    assert_trees_close(jitted, eager, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_chain_after_clipping(name):
    """optax.chain(clip_by_global_norm(1), opt) equals opt fed with the clipped gradients."""
    grads, params = _grads(), _params()
    chained, _ = run(optax.chain(optax.clip_by_global_norm(1.0), _make(name)), grads, params)
    clipped = []
    for g in grads:
        norm = np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in g.values()))
        clipped.append({k: (x / max(1.0, norm)).astype(np.float32) for k, x in g.items()})
    direct, _ = run(_make(name), clipped, params)
    assert_trees_close(chained, direct, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams(name):
    """optax.inject_hyperparams(constructor)(**kwargs) equals the plain optimizer, and changing the
    injected learning rate in the state rescales the update."""
    factory, kwargs = CASES[name]
    grads, params = _grads(), _params()
    injected = optax.inject_hyperparams(factory)(**kwargs)
    outs, state = run(injected, grads, params)
    plain, _ = run(factory(**kwargs), grads, params)
    assert_trees_close(outs, plain, **TOL)
    halved = state._replace(hyperparams={**state.hyperparams,
                                          "learning_rate": state.hyperparams["learning_rate"] / 2})
    g = jax.tree.map(jnp.asarray, grads[0])
    full, _ = jax.jit(injected.update)(g, state, params)
    half, _ = jax.jit(injected.update)(g, halved, params)
    assert_trees_close(jax.tree.map(lambda x: x / 2, full), half, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_multisteps(name):
    """optax.MultiSteps(opt, 2) over 4 micro-batches equals opt over the 2 means of consecutive
    pairs."""
    grads, params = _grads(), _params()
    outs, _ = run(optax.MultiSteps(_make(name), every_k_schedule=2), grads, params)
    means = [{k: (grads[i][k] + grads[i + 1][k]) / 2 for k in grads[i]} for i in range(0, STEPS, 2)]
    expected, _ = run(_make(name), means, params)
    assert_trees_close(outs[1::2], expected, **TOL)
    assert all(np.all(x == 0) for u in outs[0::2] for x in u.values())


@pytest.mark.parametrize("name", NAMES)
def test_masked(name):
    """optax.masked(opt, mask): masked-out leaves pass through unchanged, the others equal opt on
    the sub-tree."""
    grads, params = _grads(), _params()
    mask = {"w": True, "t": True, "v": False}
    outs, _ = run(optax.masked(_make(name), mask), grads, params)
    sub = lambda tree: {k: tree[k] for k in ("w", "t")}
    expected, _ = run(_make(name), [sub(g) for g in grads], sub(params))
    assert_trees_close([sub(u) for u in outs], expected, **TOL)
    assert_trees_close([u["v"] for u in outs], [g["v"] for g in grads], rtol=0, atol=0)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


@pytest.mark.parametrize("name", NAMES)
def test_sharded_state_on_mesh(name, mesh):
    """On a 2×4 mesh with NamedSharding-placed params, init_on_mesh puts every state leaf on the
    mesh (param-shaped leaves sharded like their param, the rest replicated); a jitted step with
    those in/out shardings gives the unsharded results."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    tx = _make(name)
    grads, params = _grads(), _params()
    param_sh = {k: NamedSharding(mesh, SPECS[k]) for k in SHAPES}
    placed = jax.device_put(params, param_sh, may_alias=False)
    state = ho.init_on_mesh(tx, placed, mesh)
    spec_of_shape = {SHAPES[k]: SPECS[k] for k in SHAPES}
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh == mesh
        expected_spec = spec_of_shape.get(leaf.shape, P())
        expected = NamedSharding(mesh, expected_spec)
        assert leaf.sharding.is_equivalent_to(expected, leaf.ndim), (leaf.shape, leaf.sharding)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    step = jax.jit(tx.update, in_shardings=(param_sh, state_sh, param_sh),
                   out_shardings=(param_sh, state_sh))
    sharded_outs = []
    for g in grads:
        u, state = step(jax.device_put(g, param_sh), state, placed)
        sharded_outs.append(jax.tree.map(np.asarray, u))
    expected, _ = run(_make(name), grads, params)
    assert_trees_close(sharded_outs, expected, **TOL)
