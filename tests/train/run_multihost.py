"""One process of a multi-process CPU run: run_multihost.py PROCESS_ID PORT CONFIG.json WORKDIR.

Each process owns 4 fake CPU devices; `jax.distributed` joins two of them into one 8-device
system (collectives through gloo), exactly as hosts of a TPU pod slice or GPU cluster join.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4 "
                           "--xla_backend_optimization_level=0")   # as tests/conftest.py
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
jax.config.update("jax_compilation_cache_dir", os.path.join(ROOT, ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

from hope_jax.train.loop import config_from_dict, train

if __name__ == "__main__":
    pid, port, config_path, workdir = sys.argv[1:5]
    with open(config_path) as f:
        config = config_from_dict(json.load(f))
    config.distributed.enabled = True
    config.distributed.coordinator_address = f"localhost:{port}"
    config.distributed.num_processes = 2
    config.distributed.process_id = int(pid)
    result = train(config, workdir)
    print(f"RESULT {pid} " + json.dumps({k: v for k, v in result.items()
                                          if isinstance(v, (int, float, str))}), flush=True)
