"""Streaming: a sequence processed in several calls, with the state carried, equals one call.

Splits at chunk boundaries and inside chunks (the state carries the chunk's snapshot and the
position), over the closed-form, linear and generic paths.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from level_cases import OPTIMIZERS, assert_close, gates_for, make_level, random_inputs


def _split_run(level, params, x, gates, cuts):
    b = x["k"].shape[0]
    state = level.init_state(params, b)
    ys, start = [], 0
    for end in list(cuts) + [x["k"].shape[1]]:
        sl = lambda a: a[:, start:end]
        y, state = core.chunked_scan(level, state, sl(x["q"]), sl(x["k"]), sl(x["v"]),
                                     **{n: sl(g) for n, g in gates.items()})
        ys.append(y)
        start = end
    return jnp.concatenate(ys, axis=1), state


@pytest.mark.parametrize("memory, objective, optimizer", [
    ("mlp", "l2", "dgd"), ("matrix", "dot", "gdn"), ("matrix", "l2", "momentum")])
@pytest.mark.parametrize("cuts", [(8,), (3,), (5, 6, 13)])
def test_calls_with_carried_state_equal_one_call(x64, memory, objective, optimizer, cuts):
    """Outputs and the final memory, momentum and snapshot agree (float64, 1e-10), C = 4, T = 15."""
    b, t, h, d = 2, 15, 2, 4
    x = random_inputs(4, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS[optimizer], x)
    level = make_level(memory, objective, optimizer, chunk_size=4, read="pre")
    params = level.memory.init(jax.random.PRNGKey(0), h, d, d, jnp.float64)
    y_one, s_one = _split_run(level, params, x, gates, ())
    y_split, s_split = _split_run(level, params, x, gates, cuts)
    assert_close(y_split, y_one, 1e-10, "outputs")
    assert_close((s_split.memory, s_split.opt_state, s_split.snapshot),
                 (s_one.memory, s_one.opt_state, s_one.snapshot), 1e-10, "state")
    assert int(s_split.position) == int(s_one.position) == t


@pytest.mark.fast
def test_generic_path_streams_too(x64):
    """The generic path (non-canonical optimizer) also resumes mid-chunk exactly."""
    b, t, h, d = 1, 9, 2, 3
    x = random_inputs(6, b, t, h, d, d)
    odd = core.chain(core.scale_by_step_size(), core.add_retention(), core.trace_momentum())
    level = core.Level(core.residual_mlp_memory(expansion=1), core.l2(), odd, chunk_size=4)
    params = level.memory.init(jax.random.PRNGKey(0), h, d, d, jnp.float64)
    gates = dict(eta=x["eta"], alpha=x["alpha"], beta=x["beta"])
    y_one, s_one = _split_run(level, params, x, gates, ())
    y_split, s_split = _split_run(level, params, x, gates, (6,))
    assert_close(y_split, y_one, 1e-10, "outputs")
    assert_close(s_split.memory, s_one.memory, 1e-10, "memory")
