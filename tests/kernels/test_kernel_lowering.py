"""The kernels lower for their hardware from this CPU host: TPU kernels for "tpu" (Mosaic custom
call), GPU kernels for "cuda" (Triton custom call). Each lowers the whole differentiable op under
`jit(value_and_grad)`: forward kernel plus the custom_vjp backward, the Pallas backward kernel (a
second custom call).

What this checks: block shapes against Mosaic's (8, 128) tiling, primitives Mosaic / Triton can
lower (no cumsum, sort, reverse; Triton's power-of-two sizes and `dot` shapes; in the backward
kernels also every primitive of the in-kernel `jax.vjp`), ref shapes. What it cannot check
without the hardware: Mosaic's own layout and VMEM passes (libtpu) and Triton's PTX compilation,
register / shared-memory pressure and speed.
"""

import jax
import jax.numpy as jnp
import pytest

from hope_jax.kernels import _compat
from hope_jax.kernels.linear_chunk_update import LinearBlockSizes, LinearUpdateConfig
from hope_jax.kernels.linear_chunk_update import api as linear_api
from hope_jax.kernels.linear_chunk_update.backward import make_op as linear_op
from hope_jax.kernels.mlp_chunk_update import MLPBlockSizes, MLPUpdateConfig
from hope_jax.kernels.mlp_chunk_update import api as mlp_api
from hope_jax.kernels.mlp_chunk_update.backward import make_op as mlp_op

S = jax.ShapeDtypeStruct
CUSTOM_CALL = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}


def _lower(fn, args, platform: str) -> str:
    def loss(*a):
        y, state = fn(*a)
        return jnp.sum(y.astype(jnp.float32)) + sum(jnp.sum(s) for s in jax.tree.leaves(state))

    grad = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))))
    with _compat.gpu_lowering_context():
        return grad.trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _linear_case(kind: str, **kw):
    bh, n, c, d = 4, 3, 64, 128
    config = LinearUpdateConfig(chunk_size=c, **{"read": "pre", **kw})
    block = LinearBlockSizes(block_dv=64) if kind == "gpu" else LinearBlockSizes()
    t = n * c - 5  # padded last chunk
    op = linear_op(config, t, linear_api._forward(kind, config, block, t, False),
                   linear_api._backward(kind, config, block, t, False))
    seq = S((bh, n, c, d), jnp.bfloat16)
    gate = S((bh, n, c), jnp.float32)
    return op, (seq, seq, seq, gate, gate, S((bh, d, d), jnp.float32))


def _mlp_case(kind: str, **kw):
    bh, n, c, d, h = 4, 2, 64, 64, 256
    config = MLPUpdateConfig(chunk_size=c, **{"read": "pre", **kw})
    t = n * c
    block = MLPBlockSizes()
    op = mlp_op(config, t, mlp_api._forward(kind, config, block, t, False),
                mlp_api._backward(kind, config, block, t, False))
    seq = S((bh, n, c, d), jnp.float32)
    gate = S((bh, n, c), jnp.float32)
    state = (S((bh, h, d), jnp.float32), S((bh, d, h), jnp.float32)) * 2
    return op, (seq, seq, seq, gate, gate, gate, state)


def _assert_linear_kernels(text: str, platform: str) -> None:
    """Both linear kernels (forward and backward) are custom calls of `platform`."""
    assert text.count(CUSTOM_CALL[platform]) == 2, "expected the forward and backward kernels"
    assert "linear_chunk_update_fwd" in text and "linear_chunk_update_bwd" in text


@pytest.mark.fast
def test_linear_tpu_kernel_lowers_for_tpu():
    """linear_chunk_update, Mosaic TPU forward and backward kernels, C = 64, d = 128, bf16
    inputs, DGD, pre reads: both lower for "tpu"."""
    op, args = _linear_case("tpu")
    _assert_linear_kernels(_lower(op, args, "tpu"), "tpu")


@pytest.mark.fast
def test_linear_gpu_kernel_lowers_for_cuda():
    """linear_chunk_update, Triton forward and backward kernels, value rows blocked by 64: both
    lower for "cuda" (jax 0.10 directly, jax 0.12 under an abstract GPU device; see
    `_compat.gpu_lowering_context`)."""
    op, args = _linear_case("gpu")
    _assert_linear_kernels(_lower(op, args, "cuda"), "cuda")


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("kw", [
    dict(read="post"),
    dict(objective="dot", normalize=False, gated=True, read="pre"),
    dict(dgd=False, read="snapshot"),
], ids=["dgd_l2_post", "gated_delta_pre", "retention_snapshot"])
def test_linear_backward_kernel_variants_lower(platform, kw):
    """The linear backward kernel (in-kernel `jax.vjp` of the chunk math) lowers for each update
    variant: DGD on L2 with post reads, Gated DeltaNet with pre reads, retention-only GD with
    snapshot reads."""
    op, args = _linear_case("gpu" if platform == "cuda" else "tpu", **kw)
    _assert_linear_kernels(_lower(op, args, platform), platform)


def _assert_mlp_kernels(text: str, platform: str) -> None:
    assert text.count(CUSTOM_CALL[platform]) == 2, "expected the forward and backward kernels"
    assert "mlp_chunk_update_fwd" in text and "mlp_chunk_update_bwd" in text


def test_mlp_tpu_kernel_lowers_for_tpu():
    """mlp_chunk_update (DGD + momentum), Mosaic TPU forward and backward kernels, d = 64,
    h = 256: both lower for "tpu"."""
    op, args = _mlp_case("tpu")
    _assert_mlp_kernels(_lower(op, args, "tpu"), "tpu")


def test_mlp_gpu_kernel_lowers_for_cuda():
    """mlp_chunk_update, Triton forward and backward kernels, d = 64, h = 256: both lower for
    "cuda"."""
    op, args = _mlp_case("gpu")
    _assert_mlp_kernels(_lower(op, args, "cuda"), "cuda")


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_mlp_backward_kernel_titans_post_lowers(platform):
    """The MLP backward kernel for the Titans update (no DGD, plain η, post reads, L2)."""
    op, args = _mlp_case("gpu" if platform == "cuda" else "tpu", dgd=False, normalize=False,
                         read="post")
    _assert_mlp_kernels(_lower(op, args, platform), platform)
