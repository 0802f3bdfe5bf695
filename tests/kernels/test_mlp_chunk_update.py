"""mlp_chunk_update: the Pallas kernels (run by the interpreter) equal the reference.

The reference is the core's generic chunk path. Checked: outputs, final memory and momentum, and
the gradients w.r.t. q, k, v, η, α, β, the initial memory and the initial momentum, for the
Titans update (momentum + retention) and the self-modifying Titans / Hope update (+ DGD on W_in),
float32 (1e-5) and bf16 inputs (1e-2), odd T, C ∈ {16, 64}, d ∈ {32, 64, 128}, 1–2 heads, into
NaN-poisoned outputs.
"""
import jax
import jax.numpy as jnp
import pytest

from hope_jax.kernels._layout import chunk_mask, flat_heads, from_chunks, num_chunks, to_chunks
from hope_jax.kernels.mlp_chunk_update import MLPBlockSizes, MLPUpdateConfig, mlp_chunk_update
from hope_jax.kernels.mlp_chunk_update.pallas_gpu import mlp_forward_gpu
from hope_jax.kernels.mlp_chunk_update.pallas_tpu import mlp_forward_tpu
from hope_jax.kernels.mlp_chunk_update.reference import mlp_chunk_update_reference
from kernel_cases import assert_tree_close, mlp_inputs, values_and_grads

NAMES = ["q", "k", "v", "eta", "alpha", "beta", "params", "momentum"]


def _run(implementation, **kw):
    def fn(q, k, v, eta, alpha, beta, params, momentum):
        return mlp_chunk_update(q, k, v, eta, alpha, beta, params, momentum,
                                implementation=implementation, **kw)
    return fn


def _compare(b, t, h, d, hidden, dtype, rtol, seed=0, **kw):
    x = mlp_inputs(seed, b, t, h, d, hidden, dtype)
    got = values_and_grads(_run("interpret", **kw), x, NAMES)
    want = values_and_grads(_run("reference", **kw), x, NAMES)
    assert_tree_close(got[0], want[0], rtol, "outputs")
    assert_tree_close(got[1], want[1], rtol, "grads")


def test_interpret_equals_reference_self_modifying_titans():
    """DGD + momentum + retention, normalised step (Eq. 88, D3, D5), pre-write reads (Eq. 94),
    T = 37 (odd), C = 16, d = 32, h = 64, one head, float32."""
    _compare(1, 37, 1, 32, 64, jnp.float32, 1e-5, chunk_size=16, read="pre")


def test_interpret_equals_reference_titans_two_heads():
    """Titans (momentum + retention, no DGD, plain η), post-write reads, T = 40, C = 16, d = 32,
    h = 128, two heads, float32."""
    _compare(1, 40, 2, 32, 128, jnp.float32, 1e-5, chunk_size=16, dgd=False, normalize=False,
             read="post", seed=1)


def test_interpret_equals_reference_bf16_inputs():
    """bf16 q, k, v, DGD, post reads, dot objective, T = 35, C = 16, d = 32, h = 32: within 1e-2."""
    _compare(1, 35, 1, 32, 32, jnp.bfloat16, 1e-2, chunk_size=16, objective="dot", seed=2)


@pytest.mark.parametrize("kernel, c, d, hidden, t, read", [
    ("tpu", 64, 128, 128, 100, "snapshot"),
    ("gpu", 16, 32, 64, 33, "pre"),
])
def test_kernel_forward_writes_every_element(kernel, c, d, hidden, t, read):
    """Both kernels (the GPU one in the interpreter) write every element of NaN-poisoned outputs
    (y, final state, chunk-start states) and equal the reference, at C = 64, d = 128 too."""
    config = MLPUpdateConfig(chunk_size=c, read=read)
    x = mlp_inputs(3, 1, t, 2, d, hidden)
    fn = mlp_forward_tpu if kernel == "tpu" else mlp_forward_gpu
    n = num_chunks(t, c)
    chunked = [to_chunks(x[name], c) for name in ("q", "k", "v", "eta", "alpha", "beta")]
    state = tuple(flat_heads(w) for w in x["params"] + x["momentum"])
    y, end, starts = jax.jit(lambda *a: fn(config, MLPBlockSizes(), *a, state, chunk_mask(t, n, c),
                                           interpret=True, poison=True))(*chunked)
    assert all(bool(jnp.all(jnp.isfinite(s))) for s in starts), \
        "a chunk-start state was not written"
    y_ref, p_ref, s_ref = mlp_chunk_update_reference(x["q"], x["k"], x["v"], x["eta"], x["alpha"],
                                                     x["beta"], x["params"], x["momentum"], config)
    assert_tree_close(from_chunks(y, 1, t), y_ref, 1e-5, "y")
    assert_tree_close(tuple(e.reshape(r.shape) for e, r in zip(end, p_ref + s_ref)), p_ref + s_ref,
                      1e-5, "final state")
