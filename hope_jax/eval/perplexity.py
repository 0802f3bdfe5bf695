"""Held-out bits per byte and per-token perplexity of a model, as `hope-jax eval` reports them.

The arithmetic (bpb, the delta-method 95% interval, padding to one shape) is
`hope_jax.data.bpb`, which the trainer's held-out evaluation uses too; `bits_per_byte` scores each
row with the model on one device.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flax import nnx

from hope_jax.data.bpb import bpb_summary, score_units
from hope_jax.eval._scoring import progress_bar, score_rows


def bits_per_byte(model: nnx.Module, batches: Iterable[Mapping[str, np.ndarray]],
                  token_bytes: np.ndarray, *, progress: bool = False,
                  per_window: bool = False) -> dict:
    """Scores `batches` of dict(tokens int32[b, T+1], mask float32[b, T] (optional)) with
    `model(tokens) -> logits` on one device.

    Batches smaller than the first are padded with masked rows (one compile for all).
    Returns dict(bpb, ppl (exp of mean nats per scored token), nats (Σ NLL, nats),
    tokens (scored tokens), bytes (their UTF-8 bytes), bpb_se, bpb_ci95, units (rows)); with
    `per_window`, also window_nats and window_bytes: each row's sums, in order (rows with no
    scored token, such as padding, dropped), for differences between models paired over the
    same windows.
    """
    def score(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return -np.asarray(score_rows(model, tokens, mask).logp, np.float64)

    nats, toks, nbytes = score_units(progress_bar(batches, progress, desc="bpb", unit="batch"),
                                     score, token_bytes)
    out = bpb_summary(nats, toks, nbytes)
    if per_window:
        real = toks > 0
        out.update(window_nats=nats[real].tolist(), window_bytes=nbytes[real].tolist())
    return out


__all__ = ["bits_per_byte"]
