"""Chunked scan at C = 1 equals the token-by-token recurrence: values, final state, all gradients.

The reference (`reference_scan`) takes autodiff gradients at every token and applies the inner
optimizer's own update; the chunked scan runs the closed / linear / generic paths (design §3.7 and
§6.9, check 1). Checked for every memory × objective × optimizer, in float64 (1e-10) and float32
(1e-5).
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from level_cases import (OBJECTIVES, OPTIMIZERS, assert_close, gates_for, make_level,
                         outputs_and_grads, random_inputs)

GRID = [(m, o, p) for m in ("matrix", "mlp") for o in OBJECTIVES for p in OPTIMIZERS]
GRID += [("residual_linear", "l2", "dgd"), ("mlp3_tanh", "l2", "dgd"),
         ("mlp3_tanh", "dot", "momentum")]


def _compare(memory, objective, optimizer, read, dtype, rtol, b=2, t=7, h=2, d=4, seed=0,
             remat=True):
    level = make_level(memory, objective, optimizer, chunk_size=1, read=read, remat=remat)
    params = level.memory.init(jax.random.PRNGKey(seed + 1), h, d, d, dtype)
    inputs = random_inputs(seed, b, t, h, d, d, dtype)
    gates = gates_for(OPTIMIZERS[optimizer], inputs)
    got = outputs_and_grads(core.chunked_scan, level, params, inputs, gates)
    want = outputs_and_grads(core.reference_scan, level, params, inputs, gates)
    for key in ("y", "memory", "opt_state", "grads"):
        assert_close(got[key], want[key], rtol,
                     f"{level.path} {memory}/{objective}/{optimizer} {key}")


@pytest.mark.parametrize("memory, objective, optimizer", GRID)
def test_chunk_size_one_equals_reference_float64(x64, memory, objective, optimizer):
    """Every combination, post-write reads, float64: relative error ≤ 1e-10 (without remat, which
    only changes how the backward pass is scheduled; the float32 cases keep it)."""
    _compare(memory, objective, optimizer, "post", jnp.float64, 1e-10, remat=False)


@pytest.mark.fast
@pytest.mark.parametrize("memory, objective, optimizer", [
    ("mlp", "l2", "dgd"), ("matrix", "dot", "gdn"), ("mlp", "l2", "momentum")])
def test_chunk_size_one_equals_reference_float32(memory, objective, optimizer):
    """float32, pre-write reads (Hope's M_{t−1}), odd length: relative error ≤ 1e-5."""
    _compare(memory, objective, optimizer, "pre", jnp.float32, 1e-5, t=9, d=6)
