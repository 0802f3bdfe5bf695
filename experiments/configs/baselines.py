"""The linear baselines. Usage: --config=experiments/configs/baselines.py:gated_deltanet,tiny
(linear_attention, deltanet, gated_deltanet, ttt_linear, ttt_mlp)."""
from hope_jax.config.experiments import experiment_config


def get_config(arg: str = "gated_deltanet,tiny"):
    arch, _, size = arg.rpartition(",")
    return experiment_config(arch or "gated_deltanet", size)
