"""Held-out bits per byte and per-token perplexity of a model, as `hope-jax eval` reports them.

The arithmetic (bpb, the delta-method 95% interval, padding to one shape) is
`hope_jax.data.bpb`, which the trainer's held-out evaluation uses too; `bits_per_byte` scores each
row with the model on one device.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flax import nnx

from hope_jax.data.bpb import score_bpb
from hope_jax.eval._scoring import progress_bar, score_rows


def bits_per_byte(model: nnx.Module, batches: Iterable[Mapping[str, np.ndarray]],
                  token_bytes: np.ndarray, *, progress: bool = False) -> dict:
    """Scores `batches` of dict(tokens int32[b, T+1], mask float32[b, T] (optional)) with
    `model(tokens) -> logits` on one device.

    Batches smaller than the first are padded with masked rows (one compile for all).
    Returns dict(bpb, ppl (exp of mean nats per scored token), nats (Σ NLL, nats),
    tokens (scored tokens), bytes (their UTF-8 bytes), bpb_se, bpb_ci95, units (rows)).
    """
    def score(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return -np.asarray(score_rows(model, tokens, mask).logp, np.float64)

    return score_bpb(progress_bar(batches, progress, desc="bpb", unit="batch"), score,
                     token_bytes)


__all__ = ["bits_per_byte"]
