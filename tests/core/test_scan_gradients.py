"""Meta-gradients through the writes (D8): finite differences, reach of the initial memory, stop
mode."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax import core
from level_cases import OPTIMIZERS, assert_close, gates_for, make_level, random_inputs


def _loss(level, params, x, gates):
    y, state = core.chunked_scan(level, level.init_state(params, x["k"].shape[0]), x["q"], x["k"],
                                 x["v"], **gates)
    probe = jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))
    return jnp.sum(jnp.sin(y) * probe) + sum(jnp.sum(jnp.tanh(w)) for w in state.memory)


@pytest.mark.parametrize("memory, objective, optimizer", [
    ("mlp", "l2", "dgd"), ("matrix", "dot", "gdn"), ("matrix", "l2", "momentum")])
def test_gradients_match_finite_differences(x64, memory, objective, optimizer):
    """Directional derivatives along random directions, w.r.t. the initial memory, keys, values and
    gates, equal central finite differences (float64, relative 1e-6), at C = 3 with T = 8."""
    b, t, h, d = 1, 8, 2, 3
    level = make_level(memory, objective, optimizer, chunk_size=3, read="pre")
    x = random_inputs(21, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS[optimizer], x)
    params = level.memory.init(jax.random.PRNGKey(3), h, d, d, jnp.float64)
    args = dict(params=params, k=x["k"], v=x["v"], **gates)

    def f(args):
        xx = dict(x, k=args["k"], v=args["v"])
        return _loss(level, args["params"], xx, {n: args[n] for n in gates})

    grads = jax.jit(jax.grad(f))(args)
    f = jax.jit(f)  # one compile for every perturbed evaluation below (eager costs ~2× more)
    rng = np.random.default_rng(0)
    for name in args:
        direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), args[name])
        eps = 1e-6
        plus = dict(args, **{name: jax.tree.map(lambda a, u: a + eps * u, args[name], direction)})
        minus = dict(args, **{name: jax.tree.map(lambda a, u: a - eps * u, args[name], direction)})
        numeric = (f(plus) - f(minus)) / (2 * eps)
        analytic = sum(jnp.sum(g * u) for g, u in zip(jax.tree.leaves(grads[name]),
                                                       jax.tree.leaves(direction)))
        assert abs(float(numeric - analytic)) <= 1e-6 * max(1.0, abs(float(numeric))), name


@pytest.mark.fast
def test_meta_gradient_reaches_initial_memory_through_writes(x64):
    """Gates act only through the writes: full mode gives them non-zero gradients, stop mode
    exactly zero; the initial memory gets gradients in both modes (through the reads)."""
    b, t, h, d = 1, 6, 1, 3
    x = random_inputs(2, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS["dgd"], x)
    for gradient, expect_zero in (("full", False), ("stop", True)):
        level = make_level("mlp", "l2", "dgd", chunk_size=3, gradient=gradient)
        params = level.memory.init(jax.random.PRNGKey(1), h, d, d, jnp.float64)
        g_params, g_eta = jax.jit(jax.grad(
            lambda p, e: _loss(level, p, x, dict(gates, eta=e)), argnums=(0, 1)))(params,
                                                                                 gates["eta"])
        assert all(float(jnp.max(jnp.abs(g))) > 0 for g in g_params)
        assert (float(jnp.max(jnp.abs(g_eta))) == 0.0) == expect_zero, gradient


def test_stop_gradient_mode_matches_reference(x64):
    """Stop mode at C = 1 equals the reference with stop_gradient on every write: values and
    gradients w.r.t. the initial memory and the queries."""
    b, t, h, d = 2, 7, 2, 4
    x = random_inputs(8, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS["dgd"], x)
    level = make_level("mlp", "l2", "dgd", chunk_size=1, gradient="stop", read="post")
    params = level.memory.init(jax.random.PRNGKey(1), h, d, d, jnp.float64)

    def f(scan, p, q):
        y, state = scan(level, level.init_state(p, b), q, x["k"], x["v"], **gates)
        return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.tanh(w)) for w in state.memory)

    got = jax.jit(jax.value_and_grad(lambda p, q: f(core.chunked_scan, p, q),
                                     argnums=(0, 1)))(params, x["q"])
    want = jax.jit(jax.value_and_grad(lambda p, q: f(core.reference_scan, p, q),
                                      argnums=(0, 1)))(params, x["q"])
    assert_close(got, want, 1e-10)
