"""The chunked update of the residual MLP memory with momentum, retention and DGD (kernel op)."""
from hope_jax.kernels.mlp_chunk_update.api import mlp_chunk_update
from hope_jax.kernels.mlp_chunk_update.block_sizes import MLPBlockSizes, default_block_sizes
from hope_jax.kernels.mlp_chunk_update.config import MLPUpdateConfig

__all__ = ["MLPBlockSizes", "MLPUpdateConfig", "default_block_sizes", "mlp_chunk_update"]
