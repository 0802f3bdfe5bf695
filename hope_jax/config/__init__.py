"""Experiment configs: the schema (`default_config`) and validation."""
from hope_jax.config.build import decoder_config
from hope_jax.config.defaults import ConfigDict, default_config
from hope_jax.config.validate import ConfigError, resolve_mesh, validate

__all__ = ["ConfigDict", "ConfigError", "decoder_config", "default_config", "resolve_mesh",
           "validate"]
