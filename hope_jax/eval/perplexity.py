"""Held-out bits per byte (tokenizer-independent) and per-token perplexity.

    bpb = Σ_t mask_t · (−ln p(x_{t+1} | x_{≤t})) / ln 2  /  Σ_t mask_t · bytes(x_{t+1})

`bytes(id)` is the UTF-8 length of a token (tokenizer.token_bytes(); specials count 0), so bpb
compares byte-level and BPE models on the same text (D32).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from flax import nnx

from hope_jax.eval._scoring import pad_rows, progress_bar, score_rows


def bits_per_byte(model: nnx.Module, batches: Iterable[Mapping[str, np.ndarray]],
                  token_bytes: np.ndarray, *, progress: bool = False) -> dict:
    """Scores `batches` of dict(tokens int32[b, T+1], mask float32[b, T] (optional)).

    Batches smaller than the first are padded with masked rows (one compile for all).
    Returns dict(bpb, ppl (exp of mean nats per scored token), nats (Σ NLL, nats),
    tokens (scored tokens), bytes (their UTF-8 bytes)).
    """
    token_bytes = np.asarray(token_bytes, np.int64)
    nats = 0.0
    n_tokens = 0.0
    n_bytes = 0.0
    rows = None
    for batch in progress_bar(batches, progress, desc="bpb", unit="batch"):
        tokens = np.asarray(batch["tokens"], np.int32)
        mask = np.asarray(batch.get("mask", np.ones((tokens.shape[0], tokens.shape[1] - 1))),
                          np.float32)
        if tokens.ndim != 2 or mask.shape != (tokens.shape[0], tokens.shape[1] - 1):
            raise ValueError(f"expected tokens [b, T+1] and mask [b, T], got {tokens.shape} "
                             f"and {mask.shape}")
        rows = tokens.shape[0] if rows is None else rows
        tokens, mask = pad_rows(tokens, rows), pad_rows(mask, rows)
        scores = score_rows(model, tokens, mask)
        nats -= float(np.asarray(scores.logp, np.float64).sum())
        n_tokens += float(mask.sum())
        n_bytes += float((token_bytes[tokens[:, 1:]] * mask).sum())
    if n_tokens == 0:
        raise ValueError("no scored tokens: the batches were empty or fully masked")
    if n_bytes == 0:
        raise ValueError("the scored tokens cover 0 bytes (only special tokens?)")
    return dict(bpb=nats / math.log(2) / n_bytes, ppl=math.exp(nats / n_tokens), nats=nats,
                tokens=int(n_tokens), bytes=int(n_bytes))
