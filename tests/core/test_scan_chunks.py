"""Chunked scan with C > 1 equals the chunk semantics of D2 written as an explicit loop.

The loop (`level_cases.explicit_chunk_loop`) takes autodiff gradients at each chunk's snapshot and
applies the update formulas of docs/design.md token by token. Also: every implementation path
(linear, closed form, generic) agrees on values, final state and all gradients; odd lengths and
ragged last chunks (D35) are covered by T not divisible by C.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from level_cases import (OPTIMIZERS, assert_close, explicit_chunk_loop, gates_for, make_level,
                         outputs_and_grads, random_inputs)


@pytest.mark.parametrize("memory, objective, optimizer, read, chunk, shape", [
    ("matrix", "l2", "gd", "post", 3, (2, 11, 2, 4, 4)),
    ("matrix", "l2", "momentum", "pre", 4, (1, 13, 3, 5, 3)),
    ("matrix", "dot", "gdn", "post", 5, (2, 12, 1, 6, 6)),
    ("residual_linear", "l2", "dgd", "post", 4, (1, 10, 2, 5, 5)),
    ("mlp", "l2", "dgd", "pre", 4, (2, 13, 2, 4, 4)),
    ("mlp", "l2", "momentum", "post", 3, (1, 11, 2, 6, 6)),
    ("mlp", "dot", "dgd_no_momentum", "snapshot", 4, (1, 9, 2, 4, 4)),
    ("mlp3_tanh", "l2", "momentum_norm", "post", 2, (1, 7, 1, 3, 3)),
    ("mlp", "l2", "gd_plain", "pre", 16, (1, 21, 1, 4, 4)),
    ("mlp", "l2", "dgd_curvature", "pre", 4, (2, 13, 2, 4, 4)),
    ("mlp3_tanh", "dot", "momentum_curvature", "post", 3, (1, 10, 1, 3, 3)),
    ("matrix", "l2", "dgd_curvature", "post", 4, (1, 9, 2, 4, 3)),
    ("mlp", "l2", "dgd_anchor", "pre", 4, (1, 11, 2, 4, 4)),
])
def test_chunked_equals_explicit_loop(x64, memory, objective, optimizer, read, chunk, shape):
    """Outputs and final memory at chunk size C > 1 equal the explicit loop (float64, 1e-10)."""
    b, t, h, d_k, d_v = shape
    level = make_level(memory, objective, optimizer, chunk_size=chunk, read=read)
    params = level.memory.init(jax.random.PRNGKey(7), h, d_k, d_v, jnp.float64)
    inputs = random_inputs(3, b, t, h, d_k, d_v)
    gates = gates_for(OPTIMIZERS[optimizer], inputs)
    y, state = jax.jit(lambda p: core.chunked_scan(level, level.init_state(p, b), inputs["q"],
                                                   inputs["k"], inputs["v"], **gates))(params)
    y_ref, w_ref, s_ref = explicit_chunk_loop(level.memory, level.objective, OPTIMIZERS[optimizer],
                                              chunk, read, params, inputs["q"], inputs["k"],
                                              inputs["v"], inputs["eta"], gates.get("alpha"),
                                              gates.get("beta"))
    assert_close(y, y_ref, 1e-10, "outputs")
    assert_close(state.memory, w_ref, 1e-10, "final memory")
    if OPTIMIZERS[optimizer].momentum:
        assert_close(state.opt_state[1].momentum, s_ref, 1e-10, "final momentum")


PATH_GRID = [
    ("matrix", "l2", "dgd", "post", ("linear", "closed_form", "generic")),
    ("matrix", "dot", "gdn", "pre", ("linear", "closed_form", "generic")),
    ("residual_linear", "dot", "momentum", "snapshot", ("linear", "closed_form", "generic")),
    ("mlp", "l2", "dgd", "post", ("closed_form", "generic")),
    ("mlp", "dot", "momentum_norm", "pre", ("closed_form", "generic")),
    ("mlp", "l2", "dgd_curvature", "pre", ("closed_form", "generic")),
    ("matrix", "l2", "dgd_anchor", "post", ("closed_form", "generic")),
]


@pytest.mark.parametrize("memory, objective, optimizer, read, paths", PATH_GRID)
@pytest.mark.parametrize("gradient", ["full", "stop"])
def test_paths_agree_on_values_state_and_gradients(x64, memory, objective, optimizer, read, paths,
                                                   gradient):
    """linear == closed_form == generic: outputs, final state and gradients w.r.t. the initial
    memory, q, k, v and all gates (float64, 1e-10), ragged last chunk (T = 11, C = 4)."""
    b, t, h, d = 2, 11, 2, 4
    inputs = random_inputs(5, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS[optimizer], inputs)
    results = {}
    for path in paths:
        level = make_level(memory, objective, optimizer, chunk_size=4, read=read, method=path,
                           gradient=gradient)
        params = level.memory.init(jax.random.PRNGKey(2), h, d, d, jnp.float64)
        results[path] = outputs_and_grads(core.chunked_scan, level, params, inputs, gates)
    base = results[paths[-1]]
    for path in paths[:-1]:
        for key in ("y", "memory", "opt_state", "grads"):
            assert_close(results[path][key], base[key], 1e-10, f"{path} vs {paths[-1]}: {key}")


@pytest.mark.parametrize("memory, objective, optimizer, read", [
    ("matrix", "dot", "gdn", "post"),
    ("residual_linear", "l2", "dgd_no_momentum", "pre"),
    ("matrix", "l2", "dgd", "snapshot"),
    ("matrix", "l2", "momentum", "post"),
])
def test_linear_path_prepares_chunks_in_step_or_ahead_alike(x64, memory, objective, optimizer,
                                                           read):
    """The linear path prepares each chunk inside the checkpointed scan step with remat and
    before the scan without: both give the same outputs, state and gradients (float64, 1e-10),
    for a fresh state and for a state carried from a call that ended mid-chunk."""
    b, t, h, d, c = 2, 11, 2, 4, 4
    inputs = random_inputs(9, b, t, h, d, d)
    gates = gates_for(OPTIMIZERS[optimizer], inputs)
    first = {name: x[:, :6] for name, x in inputs.items()}
    rest = {name: x[:, 6:] for name, x in inputs.items()}
    gates_first = {name: g[:, :6] for name, g in gates.items()}
    gates_rest = {name: g[:, 6:] for name, g in gates.items()}
    results = {}
    for remat in (True, False):
        level = make_level(memory, objective, optimizer, chunk_size=c, read=read, remat=remat)
        assert level.path == "linear"
        params = level.memory.init(jax.random.PRNGKey(4), h, d, d, jnp.float64)
        fresh = outputs_and_grads(core.chunked_scan, level, params, inputs, gates)

        def second_call(p, *args, level=level):  # streaming: the state of the first 6 tokens
            names = ["q", "k", "v"] + sorted(gates_rest)
            kw = dict(zip(names, args))
            _, state = core.chunked_scan(level, level.init_state(p, b), first["q"], first["k"],
                                         first["v"], **gates_first)
            y, state = core.chunked_scan(level, state, **kw)
            return jnp.sum(jnp.sin(y)) + jnp.sum(jnp.tanh(state.memory[0])), y

        args = [rest["q"], rest["k"], rest["v"]] + [gates_rest[n] for n in sorted(gates_rest)]
        (_, y), grads = jax.jit(jax.value_and_grad(second_call, argnums=tuple(range(len(args) + 1)),
                                                   has_aux=True))(params, *args)
        results[remat] = (fresh, y, grads)
    (fresh_in, y_in, grads_in), (fresh_ahead, y_ahead, grads_ahead) = results[True], results[False]
    for key in ("y", "memory", "opt_state", "grads"):
        assert_close(fresh_in[key], fresh_ahead[key], 1e-10, f"fresh state: {key}")
    assert_close(y_in, y_ahead, 1e-10, "carried state: outputs")
    assert_close(grads_in, grads_ahead, 1e-10, "carried state: gradients")


@pytest.mark.fast
def test_auto_picks_the_fastest_applicable_path():
    """auto: linear for a matrix memory with l2/dot, closed form for MLPs, generic otherwise."""
    assert make_level("matrix", "dot", "gdn").path == "linear"
    assert make_level("mlp", "l2", "dgd").path == "closed_form"
    huber = core.objectives.custom(lambda y, v: jnp.sum(jnp.abs(y - v)))
    assert core.Level(core.matrix_memory(), huber, core.gd()).path == "closed_form"
    odd = core.chain(core.scale_by_step_size(), core.add_retention(), core.trace_momentum())
    assert core.Level(core.matrix_memory(), core.l2(), odd).path == "generic"
