"""mlp_chunk_update: the Pallas backward kernels (TPU and GPU, run by the interpreter).

As for the linear op: the custom_vjp's backward is a Pallas kernel (reverse chunk walk, the state
cotangent on chip, `jax.vjp` of the chunk math in the kernel body); its gate cotangents go back to
η, α, β through `kernel_gates`. Checked on tiny shapes (C = 16, d = h = 32, T = 37 = 2 chunks + a
tail, B·H ≤ 2): gradients w.r.t. q, k, v, η, α, β, the initial memory and momentum equal the
reference's (float32, relative 1e-5) for self-modifying Titans (DGD, pre reads) and Titans
(momentum + retention, post reads), with both kernels; each backward kernel writes every element of
NaN-poisoned outputs and equals the XLA fallback backward; `backward="xla"` selects the fallback.
"""
import functools

import jax
import jax.numpy as jnp
import pytest

from hope_jax.kernels._layout import flat_heads, from_chunks, to_chunks, unflat_heads
from hope_jax.kernels.mlp_chunk_update import MLPBlockSizes, MLPUpdateConfig, mlp_chunk_update
from hope_jax.kernels.mlp_chunk_update import api as mlp_api
from hope_jax.kernels.mlp_chunk_update.backward import pallas_backward, xla_backward
from hope_jax.kernels.mlp_chunk_update.pallas_gpu import GATE_CHANNELS
from hope_jax.kernels.mlp_chunk_update.pallas_gpu_backward import mlp_backward_gpu
from hope_jax.kernels.mlp_chunk_update.pallas_tpu_backward import mlp_backward_tpu
from kernel_cases import assert_tree_close, mlp_inputs, values_and_grads

NAMES = ["q", "k", "v", "eta", "alpha", "beta", "params", "momentum"]
BWD_KERNEL = "mlp_chunk_update_bwd"
SELF_MODIFYING_PRE = dict(chunk_size=16, read="pre")
TITANS_POST = dict(chunk_size=16, dgd=False, normalize=False, read="post")


def _op(kind: str, block: MLPBlockSizes, kw: dict):
    """The Pallas op of `kind` ("tpu" / "gpu") in the interpreter, on [B, T, H, ·] inputs."""
    config = MLPUpdateConfig(**kw)

    def fn(q, k, v, eta, alpha, beta, params, momentum):
        b, t = q.shape[:2]
        op = mlp_api.make_op(config, t, mlp_api._forward(kind, config, block, t, True),
                             mlp_api._backward(kind, config, block, t, True))
        state = tuple(flat_heads(x) for x in params + momentum)
        y, end = op(*(to_chunks(x, config.chunk_size) for x in (q, k, v, eta, alpha, beta)),
                    state)
        end = tuple(unflat_heads(x, b) for x in end)
        return from_chunks(y, b, t), end[:2], end[2:]

    return fn


def _reference(kw: dict):
    def fn(q, k, v, eta, alpha, beta, params, momentum):
        return mlp_chunk_update(q, k, v, eta, alpha, beta, params, momentum,
                                implementation="reference", **kw)

    return fn


def _grad_jaxpr(fn, x: dict) -> str:
    def loss(*a):
        return jnp.sum(fn(*a)[0])

    return str(jax.make_jaxpr(jax.grad(loss, argnums=tuple(range(len(NAMES)))))(
        *(x[n] for n in NAMES)))


@pytest.mark.parametrize("kind", [pytest.param("tpu", marks=pytest.mark.fast), "gpu"])
@pytest.mark.parametrize("kw, seed, heads", [(SELF_MODIFYING_PRE, 0, 1), (TITANS_POST, 1, 2)],
                         ids=["self_modifying_pre", "titans_post"])
def test_backward_kernel_grads_equal_reference(kind, kw, seed, heads):
    """T = 37, C = 16, d = h = 32, B·H ≤ 2, float32: values and every gradient of the op with the
    Pallas backward (TPU or GPU kernel) equal the reference within 1e-5."""
    x = mlp_inputs(seed, 1, 37, heads, 32, 32)
    fn = _op(kind, MLPBlockSizes(), kw)
    assert BWD_KERNEL in _grad_jaxpr(fn, x), "the Pallas backward kernel did not run"
    got = values_and_grads(fn, x, NAMES)
    want = values_and_grads(_reference(kw), x, NAMES)
    assert_tree_close(got[0], want[0], 1e-5, "outputs")
    assert_tree_close(got[1], want[1], 1e-5, "grads")


@pytest.mark.parametrize("kind", ["tpu", "gpu"])
def test_backward_kernel_writes_every_element(kind):
    """Each backward kernel into NaN-poisoned outputs (aliased): every cotangent is written, and
    the cotangents of (q, k, v, η, α, β, state) equal the XLA fallback backward's (1e-5).
    Self-modifying Titans (DGD), L2, post reads, T = 21 (C = 16), d = 16, h = 32."""
    config = MLPUpdateConfig(chunk_size=16, read="post")
    t = 21
    x = mlp_inputs(6, 1, t, 1, 16, 32)
    chunked = [to_chunks(x[n], 16) for n in ("q", "k", "v", "eta", "alpha", "beta")]
    state = tuple(flat_heads(s) for s in x["params"] + x["momentum"])
    block = MLPBlockSizes()
    keys = jax.random.split(jax.random.PRNGKey(7), 9)
    n = chunked[0].shape[1]
    # Any chunk-start states will do: the backward's cotangents are a function of them.
    starts = tuple(s[:, None] + 0.01 * jax.random.normal(kk, (s.shape[0], n) + s.shape[1:])
                   for kk, s in zip(keys[5:], state))
    dy = jax.random.normal(keys[0], chunked[2].shape)
    dend = tuple(0.1 * jax.random.normal(kk, s.shape) for kk, s in zip(keys[1:5], state))
    kernel_fn = mlp_backward_tpu if kind == "tpu" else mlp_backward_gpu
    kernel = functools.partial(kernel_fn, config, block, interpret=True, poison=True)
    pad = None if kind == "tpu" else GATE_CHANNELS

    def run(*args):
        raw = []

        def recording(*a):
            raw.append(kernel(*a))
            return raw[-1]

        return pallas_backward(config, t, recording, gate_pad=pad)(*args), raw[0]

    got, raw = jax.jit(run)(*chunked, starts, dy, dend)
    for i, r in enumerate(jax.tree.leaves(raw)):
        assert bool(jnp.all(jnp.isfinite(r))), f"backward output {i} not fully written"
    want = jax.jit(xla_backward(config, t))(*chunked, starts, dy, dend)
    assert_tree_close(got, want, 1e-5, "cotangents")


def test_backward_xla_option_selects_fallback():
    """`MLPBlockSizes(backward="xla")` traces the XLA reverse scan instead of the kernel (its
    numbers equal the kernel's: `test_backward_kernel_writes_every_element`); other values
    raise."""
    x = mlp_inputs(8, 1, 20, 1, 16, 16)
    assert BWD_KERNEL not in _grad_jaxpr(_op("tpu", MLPBlockSizes(backward="xla"),
                                             SELF_MODIFYING_PRE), x)
    assert BWD_KERNEL in _grad_jaxpr(_op("tpu", MLPBlockSizes(), SELF_MODIFYING_PRE), x)
    with pytest.raises(ValueError, match="backward"):
        MLPBlockSizes(backward="triton")
