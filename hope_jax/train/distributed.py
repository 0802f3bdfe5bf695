"""Multi-host start-up: `jax.distributed.initialize` from `config.distributed`.

Call `maybe_initialize` before any other jax call that touches devices. With `enabled` and no
coordinator given, jax auto-detects the cluster (TPU pods, SLURM, Open MPI, …); explicit
`coordinator_address` / `num_processes` / `process_id` are passed through.
"""
from __future__ import annotations

import logging

import jax

log = logging.getLogger(__name__)

_initialized = False


def maybe_initialize(dist_cfg) -> bool:
    """Initialises jax.distributed once if `dist_cfg.enabled`; returns whether it is (now) on."""
    global _initialized
    if _initialized:
        return True
    if dist_cfg is None or not bool(dist_cfg.get("enabled", False)):
        return False
    kwargs = {}
    if dist_cfg.get("coordinator_address"):
        kwargs["coordinator_address"] = str(dist_cfg.coordinator_address)
    if int(dist_cfg.get("num_processes", 0)) > 0:
        kwargs["num_processes"] = int(dist_cfg.num_processes)
    if int(dist_cfg.get("process_id", -1)) >= 0:
        kwargs["process_id"] = int(dist_cfg.process_id)
    try:  # cross-process collectives on the CPU backend (tests, CPU clusters) go through gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # option renamed or gone: the backend's default
        pass
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        if "already" not in str(e).lower():  # initialised by the caller: fine
            raise
    _initialized = True
    if jax.process_index() == 0:
        log.info("jax.distributed: %d processes, %d devices", jax.process_count(),
                 jax.device_count())
    return True


def is_main_process() -> bool:
    """Process 0 writes logs, TensorBoard and plots."""
    return jax.process_index() == 0


__all__ = ["is_main_process", "maybe_initialize"]
