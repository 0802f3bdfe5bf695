"""Hope-Attention (softmax attention + CMS). Usage:
--config=experiments/configs/hope_attention.py:tiny"""
from hope_jax.config.experiments import experiment_config


def get_config(size: str = "tiny"):
    return experiment_config("hope_attention", size)
