"""Held-out bits per byte (tokenizer-independent) and per-token perplexity of token batches under
a scorer: the one implementation, used by the trainer (`score_bpb` with its sharded eval step,
hope_jax/train/loop.py) and by `hope-jax eval` (`hope_jax.eval.perplexity.bits_per_byte`).

    bpb = Σ_t mask_t · (−ln p(x_{t+1} | x_{≤t})) / ln 2  /  Σ_t mask_t · bytes(x_{t+1})

`bytes(id)` is the UTF-8 length of a token (tokenizer.token_bytes(); specials count 0), so bpb
compares byte-level and BPE models on the same text (D32).

Confidence interval: bpb is a ratio of sums over scoring units (rows, or whole batches when the
scorer only returns batch sums). With per-unit nats n_i and bytes b_i, R = Σn / Σb and the
delta-method standard error is sqrt(k/(k−1) · Σ (n_i − R b_i)²) / Σb (k units); `bpb_ci95` is
R ± 1.96 · se, in bits. It treats the windows as independent draws from the split, which
neighbouring windows of one text only approximate.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

# score(tokens int32[rows, T+1], mask float32[rows, T]) -> nats per row [rows] or per batch [1]
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pad_rows(x: np.ndarray, rows: int, value=0) -> np.ndarray:
    """Pads axis 0 of x up to `rows` with `value` (no-op if already that size)."""
    if x.shape[0] > rows:
        raise ValueError(f"batch of {x.shape[0]} rows exceeds the fixed batch size {rows}")
    if x.shape[0] == rows:
        return x
    pad = np.full((rows - x.shape[0],) + x.shape[1:], value, dtype=x.dtype)
    return np.concatenate([x, pad], axis=0)


def bpb_summary(nats: np.ndarray, tokens: np.ndarray, nbytes: np.ndarray) -> dict:
    """Per-unit sums → dict(bpb, ppl, nats, tokens, bytes, bpb_se, bpb_ci95, units)."""
    nats, tokens, nbytes = (np.asarray(x, np.float64) for x in (nats, tokens, nbytes))
    n_tok, n_bytes, total = float(tokens.sum()), float(nbytes.sum()), float(nats.sum())
    if n_tok == 0:
        raise ValueError("no scored tokens: the batches were empty or fully masked")
    if n_bytes == 0:
        raise ValueError("the scored tokens cover 0 bytes (only special tokens?)")
    ratio = total / n_bytes
    used = tokens > 0
    k = int(used.sum())
    if k >= 2:
        resid = nats[used] - ratio * nbytes[used]
        se = math.sqrt(k / (k - 1) * float(np.sum(resid ** 2))) / n_bytes / math.log(2)
    else:
        se = float("nan")
    bpb = ratio / math.log(2)
    return dict(bpb=bpb, ppl=math.exp(total / n_tok), nats=total, tokens=int(n_tok),
                bytes=int(n_bytes), bpb_se=se, bpb_ci95=[bpb - 1.96 * se, bpb + 1.96 * se],
                units=k)


def paired_difference_se(a_nats: np.ndarray, a_bytes: np.ndarray, b_nats: np.ndarray,
                         b_bytes: np.ndarray) -> float:
    """Standard error (bits) of R_a − R_b, two ratios Σ nats / Σ bytes over the same k units
    (per-unit sums [k]; the bytes may differ, e.g. two parts of each window): the delta method
    of `bpb_summary`, paired over the units. With equal bytes it is `bpb_summary`'s error of
    the per-unit differences. NaN with fewer than two units."""
    k = len(a_nats)
    if k < 2:
        return float("nan")
    ra, rb = a_nats.sum() / a_bytes.sum(), b_nats.sum() / b_bytes.sum()
    resid = (a_nats - ra * a_bytes) / a_bytes.sum() - (b_nats - rb * b_bytes) / b_bytes.sum()
    return float(math.sqrt(k / (k - 1) * np.sum(resid ** 2)) / math.log(2))


def score_bpb(batches: Iterable[Mapping[str, np.ndarray]], score: Scorer,
              token_bytes: np.ndarray, *, rows: int | None = None) -> dict:
    """Bits per byte of `batches` (dict(tokens int32[b, T+1], mask float32[b, T] optional))
    under `score`; batches with fewer than `rows` rows (default: the first batch's) are padded
    with masked rows, so the scorer sees one shape. See `bpb_summary` for the result."""
    return bpb_summary(*score_units(batches, score, token_bytes, rows=rows))


def score_units(batches: Iterable[Mapping[str, np.ndarray]], score: Scorer,
                token_bytes: np.ndarray, *, rows: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`score_bpb`'s per-unit sums before they are summarised: nats, scored tokens and bytes of
    every unit (row, padded rows included with 0 tokens; or batch), in order."""
    token_bytes = np.asarray(token_bytes, np.int64)
    nats, toks, nbytes = [], [], []
    for batch in batches:
        tokens = np.asarray(batch["tokens"], np.int32)
        mask = np.asarray(batch.get("mask", np.ones((tokens.shape[0], tokens.shape[1] - 1))),
                          np.float32)
        if tokens.ndim != 2 or mask.shape != (tokens.shape[0], tokens.shape[1] - 1):
            raise ValueError(f"expected tokens [b, T+1] and mask [b, T], got {tokens.shape} "
                             f"and {mask.shape}")
        rows = tokens.shape[0] if rows is None else rows
        tokens, mask = pad_rows(tokens, rows), pad_rows(mask, rows)
        row_nats = np.asarray(score(tokens, mask), np.float64).reshape(-1)
        row_toks = mask.sum(axis=1, dtype=np.float64)
        row_bytes = (token_bytes[tokens[:, 1:]] * mask).sum(axis=1, dtype=np.float64)
        if row_nats.size == 1:   # the scorer returns only the batch's sum
            row_toks, row_bytes = row_toks.sum(keepdims=True), row_bytes.sum(keepdims=True)
        nats.append(row_nats), toks.append(row_toks), nbytes.append(row_bytes)
    if not nats:
        raise ValueError("no scored tokens: the batches were empty or fully masked")
    return np.concatenate(nats), np.concatenate(toks), np.concatenate(nbytes)


__all__ = ["Scorer", "bpb_summary", "pad_rows", "paired_difference_se", "score_bpb",
           "score_units"]
