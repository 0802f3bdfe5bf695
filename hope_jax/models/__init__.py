"""The decoder LM, its size presets and parameter counting."""
from hope_jax.models.context_state import reset_context
from hope_jax.models.decoder import (Block, BlockState, Decoder, DecoderCache, DecoderConfig,
                                     parse_pattern)
from hope_jax.models.param_count import abstract_model, count_by_group, count_params
from hope_jax.models.presets import ARCHS, SIZES, get_config

__all__ = ["ARCHS", "Block", "BlockState", "Decoder", "DecoderCache", "DecoderConfig", "SIZES",
           "abstract_model", "count_by_group", "count_params", "get_config", "parse_pattern",
           "reset_context"]
