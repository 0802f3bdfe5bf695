"""linear_chunk_update: the Pallas kernels (run by the interpreter) equal the reference.

The reference is the core's generic chunk path (autodiff snapshot gradients, token loop). Checked:
outputs, final state and the gradients w.r.t. q, k, v, η, α and the initial state, on a
representative grid (odd T, C ∈ {16, 64}, d ∈ {32, 64, 128}, 1–3 heads, both objectives, all
read modes, DGD / gated DGD / plain retention), float32 (relative 1e-5) and bf16 inputs (1e-2).
Every kernel run writes into NaN-poisoned output buffers, so an unwritten element would show.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax.kernels._layout import chunk_mask, flat_heads, from_chunks, num_chunks, to_chunks
from hope_jax.kernels.linear_chunk_update import (LinearBlockSizes, LinearUpdateConfig,
                                                  linear_chunk_update)
from hope_jax.kernels.linear_chunk_update.pallas_gpu import linear_forward_gpu
from hope_jax.kernels.linear_chunk_update.pallas_tpu import linear_forward_tpu
from hope_jax.kernels.linear_chunk_update.reference import linear_chunk_update_reference
from kernel_cases import assert_tree_close, linear_inputs, values_and_grads

NAMES = ["q", "k", "v", "eta", "alpha", "w0"]


def _run(implementation, **kw):
    def fn(q, k, v, eta, alpha, w0):
        return linear_chunk_update(q, k, v, eta, alpha, w0, implementation=implementation, **kw)
    return fn


def _compare(b, t, h, d_k, d_v, dtype, rtol, seed=0, **kw):
    x = linear_inputs(seed, b, t, h, d_k, d_v, dtype)
    got = values_and_grads(_run("interpret", **kw), x, NAMES)
    want = values_and_grads(_run("reference", **kw), x, NAMES)
    assert_tree_close(got[0], want[0], rtol, "outputs")
    assert_tree_close(got[1], want[1], rtol, "grads")


@pytest.mark.fast
def test_interpret_equals_reference_dgd_post_odd_length():
    """Hope-style DGD on L2 (Eq. 88/93), post-write reads, T = 37 (3 chunks, last padded), C = 16,
    d = 32, one head, float32: values and all gradients within 1e-5."""
    _compare(1, 37, 1, 32, 32, jnp.float32, 1e-5, chunk_size=16, read="post")


def test_interpret_equals_reference_gated_delta_pre():
    """Gated DeltaNet (dot objective, p = η α, no normalisation), pre-write reads, T = 45, C = 16,
    d = 64, three heads, float32."""
    _compare(1, 45, 3, 64, 64, jnp.float32, 1e-5, chunk_size=16, objective="dot",
             normalize=False, gated=True, read="pre", seed=1)


def test_interpret_equals_reference_retention_snapshot_c64_d128():
    """GD with retention (no DGD), snapshot reads, C = 64, d = 128, T = 128 (2 chunks), 2 heads."""
    _compare(1, 128, 2, 128, 128, jnp.float32, 1e-5, chunk_size=64, dgd=False, read="snapshot",
             seed=2)


def test_interpret_equals_reference_bf16_inputs():
    """bf16 q, k, v (state and math in float32, D30), DGD, pre reads, T = 41, C = 16, 2 heads,
    d_k = 32, d_v = 64: outputs and gradients within 1e-2."""
    _compare(1, 41, 2, 32, 64, jnp.bfloat16, 1e-2, chunk_size=16, read="pre", seed=3)


@pytest.mark.parametrize("kernel, block, c, d_k, d_v, t, read", [
    ("tpu", LinearBlockSizes(block_dv=128), 16, 32, 256, 40, "post"),
    ("gpu", LinearBlockSizes(block_dv=32), 16, 32, 64, 33, "pre"),
])
def test_kernel_forward_writes_every_element(kernel, block, c, d_k, d_v, t, read):
    """Both kernels (the GPU one too, in the interpreter), with value-row blocking, write every
    element of NaN-poisoned outputs (y, final state, chunk-start states) and equal the reference."""
    config = LinearUpdateConfig(chunk_size=c, read=read)
    x = linear_inputs(4, 1, t, 2, d_k, d_v)
    fn = linear_forward_tpu if kernel == "tpu" else linear_forward_gpu
    n = num_chunks(t, c)
    chunked = [to_chunks(x[name], c) for name in ("q", "k", "v", "eta", "alpha")]
    run = jax.jit(lambda *a: fn(config, block, *a, flat_heads(x["w0"]), chunk_mask(t, n, c),
                                interpret=True, poison=True))
    y, w_end, starts = run(*chunked)
    assert bool(jnp.all(jnp.isfinite(starts))), "a chunk-start state was not written"
    y_ref, w_ref = linear_chunk_update_reference(x["q"], x["k"], x["v"], x["eta"], x["alpha"],
                                                 x["w0"], config)
    assert_tree_close(from_chunks(y, 1, t), y_ref, 1e-5, "y")
    assert_tree_close(w_end.reshape(w_ref.shape), w_ref, 1e-5, "final state")


def test_split_at_chunk_boundary_equals_one_call():
    """Streaming at chunk boundaries: two interpret calls with the state carried equal one call."""
    x = linear_inputs(5, 1, 48, 1, 32, 32)
    kw = dict(chunk_size=16, implementation="interpret")
    args = [x[n] for n in ("q", "k", "v", "eta", "alpha")]
    y, w = linear_chunk_update(*args, x["w0"], **kw)
    y1, w1 = linear_chunk_update(*(a[:, :32] for a in args), x["w0"], **kw)
    y2, w2 = linear_chunk_update(*(a[:, 32:] for a in args), w1, **kw)
    assert_tree_close(jnp.concatenate([y1, y2], axis=1), y, 1e-5, "y")
    assert_tree_close(w2, w, 1e-5, "state")
