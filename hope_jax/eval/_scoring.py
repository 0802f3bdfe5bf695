"""Shared jitted scoring: per-row sums of target log-probabilities under a mask.

A "model" is any NNX module with `model(tokens [B, T]) -> logits [B, T, V]` (float32).
Shapes are fixed by the caller (pad rows and lengths), so one compile serves a whole evaluation.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class RowScores(NamedTuple):
    """Per row: Σ log p(target) over masked positions, and whether every masked target is argmax."""

    logp: Array      # [B] float32
    greedy: Array    # [B] bool


def target_logprobs(logits: Array, targets: Array) -> Array:
    """logits [B, T, V], targets [B, T] int → log p(targets) [B, T] (float32)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


@nnx.jit
def score_rows(model: nnx.Module, tokens: Array, mask: Array) -> RowScores:
    """tokens [B, T+1] int32, mask [B, T] float32 (1 = score target t+1) → RowScores."""
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:]
    lp = target_logprobs(logits, targets) * mask
    hit = (jnp.argmax(logits, axis=-1) == targets) | (mask == 0)
    return RowScores(lp.sum(axis=-1), hit.all(axis=-1))


def bucket_length(n: int, minimum: int = 32) -> int:
    """The smallest power of two ≥ max(n, minimum): few distinct shapes, few compiles."""
    length = minimum
    while length < n:
        length *= 2
    return length


def progress_bar(iterable, enabled: bool, **kw):
    """`tqdm(iterable)` when enabled (stderr), else the iterable itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, **kw)
