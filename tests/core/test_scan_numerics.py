"""Numerics: bf16 inputs with a float32 state, and long sequences without NaN or Inf."""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from level_cases import OPTIMIZERS, assert_close, gates_for, make_level, random_inputs


@pytest.mark.parametrize("memory, objective, optimizer",
                         [("mlp", "l2", "dgd"), ("matrix", "dot", "gdn")])
def test_bf16_inputs_stay_close_to_float32(memory, objective, optimizer):
    """bf16 q, k, v, gates with a float32 state: outputs and final state within 1e-2 relative."""
    b, t, h, d = 2, 33, 2, 16
    x = random_inputs(1, b, t, h, d, d, jnp.float32, eta_shift=-2.0)
    gates = gates_for(OPTIMIZERS[optimizer], x)
    level = make_level(memory, objective, optimizer, chunk_size=8)
    params = level.memory.init(jax.random.PRNGKey(0), h, d, d, jnp.float32)
    state = level.init_state(params, b)
    y32, s32 = core.chunked_scan(level, state, x["q"], x["k"], x["v"], **gates)
    bf = lambda a: a.astype(jnp.bfloat16)
    y16, s16 = core.chunked_scan(level, state, bf(x["q"]), bf(x["k"]), bf(x["v"]),
                                 **{n: bf(g) for n, g in gates.items()})
    assert y16.dtype == jnp.bfloat16 and s16.memory[0].dtype == jnp.float32
    assert_close(y16, y32, 1e-2, "outputs")
    assert_close(s16.memory, s32.memory, 1e-2, "state")


@pytest.mark.slow
@pytest.mark.parametrize("memory, objective, optimizer",
                         [("mlp", "l2", "dgd"), ("matrix", "dot", "gdn")])
def test_no_nan_at_16k_tokens(memory, objective, optimizer):
    """T = 16384, C = 64, random inputs with D19-like gates: forward and gradients are finite."""
    b, t, h, d = 1, 16384, 1, 16
    x = random_inputs(9, b, t, h, d, d, jnp.float32, eta_shift=-2.0)
    gates = gates_for(OPTIMIZERS[optimizer], x)
    level = make_level(memory, objective, optimizer, chunk_size=64)
    params = level.memory.init(jax.random.PRNGKey(0), h, d, d, jnp.float32)

    def f(p, v):
        y, state = core.chunked_scan(level, level.init_state(p, b), x["q"], x["k"], v, **gates)
        return jnp.mean(jnp.square(y)), (y, state.memory)

    value_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
    (loss, (y, memory)), grads = value_and_grad(params, x["v"])
    for leaf in jax.tree.leaves((loss, y, memory, grads)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
