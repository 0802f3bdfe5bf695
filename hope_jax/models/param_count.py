"""Parameter counting, for real or abstract (`nnx.eval_shape`) models; nothing is allocated."""
from __future__ import annotations

import math
from collections import defaultdict

import jax
from flax import nnx

from hope_jax.models.decoder import Decoder, DecoderConfig


def abstract_model(config: DecoderConfig) -> Decoder:
    """The model with ShapeDtypeStruct leaves (nnx.eval_shape): no parameter is allocated."""
    return nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))


def count_params(model: nnx.Module) -> int:
    """Number of scalars in the model's `nnx.Param`s (works on abstract models)."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return int(sum(math.prod(x.shape) for x in leaves))


def count_by_group(model: nnx.Module) -> dict[str, int]:
    """Parameter counts by top-level group: embed, lm_head, norm, and per-slot block totals."""
    out: dict[str, int] = defaultdict(int)
    for path, x in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
        keys = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
        group = keys[0] if keys[0] != "blocks" else f"blocks.{keys[2]}"
        out[group] += math.prod(x.shape)
    return dict(out)
