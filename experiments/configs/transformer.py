"""Transformer++ (RoPE attention + SwiGLU). Usage:
--config=experiments/configs/transformer.py:tiny"""
from hope_jax.config.experiments import experiment_config


def get_config(size: str = "tiny"):
    return experiment_config("transformer", size)
