"""Experiment configs: the schema (`default_config`) and validation."""
from hope_jax.config.defaults import ConfigDict, default_config

__all__ = ["ConfigDict", "default_config"]
