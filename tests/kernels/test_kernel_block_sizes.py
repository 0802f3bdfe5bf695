"""Block sizes: frozen, validated dataclasses; the tuned tables; the tiling rules they enforce."""
import dataclasses

import jax.numpy as jnp
import pytest

from hope_jax.kernels.linear_chunk_update import LinearBlockSizes, default_block_sizes
from hope_jax.kernels.linear_chunk_update.block_sizes import TUNED as LINEAR_TUNED
from hope_jax.kernels.mlp_chunk_update import MLPBlockSizes
from hope_jax.kernels.mlp_chunk_update import default_block_sizes as mlp_default
from hope_jax.kernels.mlp_chunk_update.block_sizes import TUNED as MLP_TUNED


@pytest.mark.fast
def test_block_sizes_are_frozen_validated_and_tabled():
    """Bad values raise; instances are immutable; every table key is (platform, dtype, bucket);
    the TPU / GPU rules reject what Mosaic / Triton cannot tile."""
    for bad in (dict(block_dv=0), dict(num_warps=3), dict(num_stages=0), dict(vmem_limit_bytes=10)):
        with pytest.raises(ValueError):
            LinearBlockSizes(**bad)
    with pytest.raises(ValueError):
        MLPBlockSizes(num_warps=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LinearBlockSizes().block_dv = 8
    for table in (LINEAR_TUNED, MLP_TUNED):
        for platform, dtype, bucket in table:
            assert platform in ("tpu", "gpu") and dtype in ("float32", "bfloat16") and bucket
    assert default_block_sizes("tpu", jnp.float32, 256, 256).block_dv == 128
    assert default_block_sizes("cpu", jnp.float32, 64, 64) == LinearBlockSizes()
    assert isinstance(mlp_default("gpu", jnp.bfloat16, 64, 256), MLPBlockSizes)
    b = LinearBlockSizes()
    assert b.tpu_reason(64, 128, 128) is None and b.tpu_reason(12, 128, 128) is not None
    assert LinearBlockSizes(block_dv=64).tpu_reason(64, 128, 256) is not None  # lane tiling
    assert b.gpu_reason(64, 128, 128) is None and b.gpu_reason(64, 96, 128) is not None
    assert b.gpu_reason(8, 32, 32) is not None  # tl.dot needs ≥ 16
    assert MLPBlockSizes().gpu_reason(16, 32, 96) is not None
