"""The chunked update of a linear (matrix) memory with retention and DGD (kernel op)."""
from hope_jax.kernels.linear_chunk_update.api import linear_chunk_update
from hope_jax.kernels.linear_chunk_update.block_sizes import LinearBlockSizes, default_block_sizes
from hope_jax.kernels.linear_chunk_update.config import LinearUpdateConfig

__all__ = ["LinearBlockSizes", "LinearUpdateConfig", "default_block_sizes", "linear_chunk_update"]
