"""hope_jax: Nested Learning and Hope in JAX."""
