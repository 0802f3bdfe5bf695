"""Kernels for the chunked memory update (installed as `hope_jax.kernels`)."""
