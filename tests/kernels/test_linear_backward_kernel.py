"""linear_chunk_update: the Pallas backward kernels (TPU and GPU, run by the interpreter).

The custom_vjp's backward is a Pallas kernel (reverse chunk walk, dW on chip, `jax.vjp` of the
chunk math in the kernel body); its gate cotangents go back to η and α through `kernel_gates`.
Checked on tiny shapes (C = 16, d = 32, T = 2 chunks + a ragged tail): the gradients w.r.t. q, k,
v, η, α and w0 equal the reference's (float32, relative 1e-5) for DGD post-read and Gated DeltaNet
pre-read, with both kernels; each backward kernel, with value rows in two blocks, writes every
element of NaN-poisoned outputs and equals the XLA fallback backward; `backward="xla"` selects
the fallback.
"""
import functools

import jax
import jax.numpy as jnp
import pytest

from hope_jax.kernels._layout import flat_heads, to_chunks
from hope_jax.kernels.linear_chunk_update import (LinearBlockSizes, LinearUpdateConfig,
                                                  linear_chunk_update)
from hope_jax.kernels.linear_chunk_update import api as linear_api
from hope_jax.kernels.linear_chunk_update.backward import pallas_backward, xla_backward
from hope_jax.kernels.linear_chunk_update.pallas_gpu import GATE_CHANNELS
from hope_jax.kernels.linear_chunk_update.pallas_gpu_backward import linear_backward_gpu
from hope_jax.kernels.linear_chunk_update.pallas_tpu_backward import linear_backward_tpu
from kernel_cases import assert_tree_close, linear_inputs, values_and_grads

NAMES = ["q", "k", "v", "eta", "alpha", "w0"]
BWD_KERNEL = "linear_chunk_update_bwd"
DGD_POST = dict(chunk_size=16, read="post")
GATED_DELTA_PRE = dict(chunk_size=16, objective="dot", normalize=False, gated=True, read="pre")


def _op(kind: str, block: LinearBlockSizes, kw: dict):
    """The Pallas op of `kind` ("tpu" / "gpu") in the interpreter, on [B, T, H, ·] inputs."""
    config = LinearUpdateConfig(**kw)

    def fn(q, k, v, eta, alpha, w0):
        return linear_api._run_pallas(kind, config, block, True, q, k, v, eta, alpha, w0)

    return fn


def _reference(kw: dict):
    def fn(q, k, v, eta, alpha, w0):
        return linear_chunk_update(q, k, v, eta, alpha, w0, implementation="reference", **kw)

    return fn


def _grad_jaxpr(fn, x: dict) -> str:
    return str(jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(fn(*a)[0]), argnums=(0, 1, 2, 3, 4, 5)))(
        *(x[n] for n in NAMES)))


@pytest.mark.parametrize("kind, block", [
    pytest.param("tpu", LinearBlockSizes(), marks=pytest.mark.fast),
    ("gpu", LinearBlockSizes(block_dv=16)),
])
@pytest.mark.parametrize("kw, seed, heads", [(DGD_POST, 0, 1), (GATED_DELTA_PRE, 1, 2)],
                         ids=["dgd_post", "gated_delta_pre"])
def test_backward_kernel_grads_equal_reference(kind, block, kw, seed, heads):
    """T = 37 (2 chunks + a tail of 5), C = 16, d = 32, B·H ≤ 2, float32: values and gradients of
    the op with the Pallas backward (TPU kernel; GPU kernel with value rows in two blocks of 16)
    equal the reference within 1e-5."""
    x = linear_inputs(seed, 1, 37, heads, 32, 32)
    fn = _op(kind, block, kw)
    assert BWD_KERNEL in _grad_jaxpr(fn, x), "the Pallas backward kernel did not run"
    got = values_and_grads(fn, x, NAMES)
    want = values_and_grads(_reference(kw), x, NAMES)
    assert_tree_close(got[0], want[0], 1e-5, "outputs")
    assert_tree_close(got[1], want[1], 1e-5, "grads")


@pytest.mark.parametrize("kind, d_v, block", [("tpu", 256, LinearBlockSizes(block_dv=128)),
                                              ("gpu", 32, LinearBlockSizes(block_dv=16))])
def test_backward_kernel_writes_every_element(kind, d_v, block):
    """Each backward kernel, value rows in two blocks, NaN-poisoned outputs (aliased): every
    cotangent is written, and (q, k, v, η, α, w0) cotangents equal the XLA fallback backward's
    (1e-5). DGD, L2, post reads, T = 21 (C = 16)."""
    config = LinearUpdateConfig(chunk_size=16, read="post")
    t = 21
    x = linear_inputs(6, 1, t, 1, 32, d_v)
    chunked = [to_chunks(x[n], 16) for n in ("q", "k", "v", "eta", "alpha")]
    w0 = flat_heads(x["w0"])
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    n = chunked[0].shape[1]
    # Any chunk-start states will do: the backward's cotangents are a function of them.
    starts = w0[:, None] + 0.01 * jax.random.normal(keys[2], (w0.shape[0], n) + w0.shape[1:])
    dy = jax.random.normal(keys[0], chunked[2].shape)
    dw = jax.random.normal(keys[1], w0.shape)
    kernel_fn = linear_backward_tpu if kind == "tpu" else linear_backward_gpu
    kernel = functools.partial(kernel_fn, config, block, interpret=True, poison=True)
    pad = None if kind == "tpu" else GATE_CHANNELS

    def run(*args):
        raw = []

        def recording(*a):
            raw.append(kernel(*a))
            return raw[-1]

        return pallas_backward(config, t, recording, gate_pad=pad)(*args), raw[0]

    got, raw = jax.jit(run)(*chunked, starts, dy, dw)
    for i, r in enumerate(raw):
        assert bool(jnp.all(jnp.isfinite(r))), f"backward output {i} not fully written"
    want = jax.jit(xla_backward(config, t))(*chunked, starts, dy, dw)
    assert_tree_close(got, want, 1e-5, "cotangents")


def test_backward_xla_option_selects_fallback():
    """`LinearBlockSizes(backward="xla")` traces the XLA reverse scan instead of the kernel (its
    numbers equal the kernel's: `test_backward_kernel_writes_every_element`); other values
    raise."""
    x = linear_inputs(8, 1, 20, 1, 32, 32)
    kw = dict(chunk_size=16, read="pre")
    assert BWD_KERNEL not in _grad_jaxpr(_op("tpu", LinearBlockSizes(backward="xla"), kw), x)
    assert BWD_KERNEL in _grad_jaxpr(_op("tpu", LinearBlockSizes(), kw), x)
    with pytest.raises(ValueError, match="backward"):
        LinearBlockSizes(backward="triton")
