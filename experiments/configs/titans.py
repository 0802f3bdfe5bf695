"""Titans. Usage: --config=experiments/configs/titans.py:mag,tiny  (variant: lmm, mag, mal; a bare
size such as `:tiny` means MAG)."""
from hope_jax.config.experiments import experiment_config


def get_config(arg: str = "mag,tiny"):
    variant, _, size = arg.rpartition(",")
    return experiment_config(f"titans_{variant or 'mag'}", size)
