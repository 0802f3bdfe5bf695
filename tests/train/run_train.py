"""Runs `train()` in a fresh process (the resume and SIGTERM tests): run_train.py CONFIG.json
WORKDIR.

Uses the same 8 fake CPU devices and persistent compilation cache as tests/conftest.py.
"""
import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0")   # as tests/conftest.py
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
jax.config.update("jax_compilation_cache_dir", os.path.join(ROOT, ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

from hope_jax.train.loop import config_from_dict, train

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        config = config_from_dict(json.load(f))
    result = train(config, sys.argv[2])
    print("RESULT " + json.dumps(result), flush=True)
