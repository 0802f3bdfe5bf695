"""`grouped_scan`: the backward stores one carry per group of chunks (design D30).

Values and gradients must equal the plain checkpointed scan's (float64, odd lengths, a ragged
tail of steps that do not fill a group), and the compiled backward must hold less memory.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from hope_jax.core.self_modifying import SelfModifyingLevel, self_modifying_scan
from level_cases import assert_close, random_inputs


def _level(group: int, chunk: int = 2) -> core.Level:
    return core.Level(core.residual_mlp_memory(expansion=2), core.l2(),
                      core.dgd(normalize="curvature", dampening=True, retain_to_init=True),
                      chunk_size=chunk, read="pre", scan_group=group)


def _loss(level, params, inputs):
    b = inputs["k"].shape[0]
    y, state = core.chunked_scan(level, level.init_state(params, b), inputs["q"], inputs["k"],
                                 inputs["v"], eta=inputs["eta"], alpha=inputs["alpha"],
                                 beta=inputs["beta"])
    return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.tanh(w)) for w in jax.tree.leaves(state.memory))


@pytest.mark.fast
def test_grouped_level_scan_equals_the_plain_scan(x64):
    """T = 23, C = 2: 12 chunks in groups of 5 (two groups and a tail of 2); values and gradients
    w.r.t. the initial memory and every input equal scan_group = 1."""
    inputs = random_inputs(1, 2, 23, 2, 4, 4)
    params = _level(1).memory.init(jax.random.PRNGKey(0), 2, 4, 4, jnp.float64)
    out = {}
    for group in (1, 5):
        level = _level(group)
        out[group] = jax.jit(jax.value_and_grad(lambda p, x: _loss(level, p, x),
                                                argnums=(0, 1)))(params, inputs)
    assert_close(out[5], out[1], 1e-12, "value and gradients")


@pytest.mark.fast
def test_grouped_self_modifying_scan_equals_the_plain_scan(x64):
    """Hope's mixer, T = 13, C_oth = 2, C_mem = 4: 8 sub-chunks in groups of 3 (a tail of 2)."""
    b, h, d = 2, 2, 4
    xs = [jax.random.normal(jax.random.PRNGKey(i), (b, 13, h, d), jnp.float64) for i in range(3)]
    out = {}
    for group in (1, 3):
        level = SelfModifyingLevel(chunk_other=2, chunk_memory=4, scan_group=group,
                                   optimizer=core.dgd(normalize="curvature", dampening=True,
                                                      retain_to_init=True))
        params = level.init_params(jax.random.PRNGKey(3), h, d, jnp.float64)

        def loss(p, xq, xk, xv, level=level):
            o, st = self_modifying_scan(level, p, level.init_state(p, b), xq, xk, xv)
            return jnp.sum(jnp.sin(o)) + sum(jnp.sum(jnp.tanh(a))
                                             for a in jax.tree.leaves(st.memories))

        out[group] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(params, *xs)
    assert_close(out[3], out[1], 1e-12, "value and gradients")


def test_grouping_lowers_the_backward_memory():
    """XLA's compiled temporaries of the gradient at T = 256, C = 2 (128 chunks): groups of 8
    store ~16 + 8 states instead of 128."""
    inputs = random_inputs(2, 1, 256, 2, 8, 8, dtype=jnp.float32)
    params = _level(1).memory.init(jax.random.PRNGKey(0), 2, 8, 8, jnp.float32)
    temp = {}
    for group in (1, 8):
        level = _level(group)
        fn = jax.jit(jax.grad(lambda p, x: _loss(level, p, x)))
        temp[group] = fn.lower(params, inputs).compile().memory_analysis().temp_size_in_bytes
    assert temp[8] < 0.5 * temp[1], temp
