"""Test-wide set-up: 8 fake CPU devices, the persistent compilation cache, float64 on demand.

XLA_FLAGS must be set before jax is imported, so it happens at the top of this file.
"""
from __future__ import annotations

import os

# Level-0 backend optimisation halves the CPU compile time of a tiny Hope step (24 → 12.6 s)
# and barely changes its run time; the suite is bound by compilation (BUILD.md, "Tests").
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def x64():
    """Runs the test with jax_enable_x64 on, restoring the previous value afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
