"""Zero-shot log-likelihood scoring of user-brought jsonl files (lm-eval-harness style).

Formats (one JSON object per line; the format is detected from the keys):

  LAMBADA    {"text": ...}                                    predict the last word
  HellaSwag  {"ctx": ..., "endings": [...], "label": i}       pick the ending
  PIQA       {"goal": ..., "sol1": ..., "sol2": ..., "label": i}

A continuation c after a context x is scored as log p(c | x) = Σ_t log p(c_t | x, c_<t); the
context starts with BOS. Multiple choice: acc picks argmax log p; acc_norm picks argmax
log p / bytes(c) (the harness's byte-length normalisation). LAMBADA: acc is greedy exact match
of every token of " " + last word; also the mean log-likelihood and perplexity of those tokens.

Rows are padded to a power-of-two length (≥ 32) and a fixed batch, so there are few compiles.
Sequences longer than `max_len` keep their last max_len + 1 tokens (the context is cut on the left).
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
from flax import nnx

from hope_jax.eval._protocols import Tokenizer
from hope_jax.eval._scoring import bucket_length, pad_rows, progress_bar, score_rows

FORMATS = ("lambada", "hellaswag", "piqa")


def load_jsonl(path: str) -> list[dict]:
    """The JSON objects of a jsonl file (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def detect_format(example: dict) -> str:
    """"lambada", "hellaswag" or "piqa" from an example's keys."""
    if {"ctx", "endings", "label"} <= example.keys():
        return "hellaswag"
    if {"goal", "sol1", "sol2", "label"} <= example.keys():
        return "piqa"
    if "text" in example:
        return "lambada"
    raise ValueError(f"unknown zero-shot format with keys {sorted(example)}; expected one of "
                     "{text} | {ctx, endings, label} | {goal, sol1, sol2, label}")


def score_continuations(model: nnx.Module, tokenizer: Tokenizer,
                        pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                        max_len: int | None = None, progress: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context, continuation) pairs → (log p(continuation | BOS context) float64[N],
    greedy: all continuation tokens are argmax bool[N], continuation token counts int[N])."""
    rows = []
    for ctx, cont in pairs:
        c = np.asarray(tokenizer.encode(ctx), np.int32)
        x = np.asarray(tokenizer.encode(cont), np.int32)
        if len(x) == 0:
            raise ValueError(f"empty continuation after context {ctx[-40:]!r}")
        seq = np.concatenate([[tokenizer.bos_id], c, x]).astype(np.int32)
        if max_len is not None and len(seq) > max_len + 1:
            if len(x) > max_len:
                raise ValueError(f"continuation of {len(x)} tokens exceeds max_len {max_len}")
            seq = seq[-(max_len + 1):]
        rows.append((seq, len(x)))
    logp = np.zeros(len(rows))
    greedy = np.zeros(len(rows), bool)
    order = np.argsort([len(s) for s, _ in rows], kind="stable")  # similar lengths together
    starts = range(0, len(rows), batch_size)
    for start in progress_bar(starts, progress, desc="zero-shot", unit="batch"):
        idx = order[start:start + batch_size]
        width = bucket_length(max(len(rows[i][0]) for i in idx))
        tokens = np.full((len(idx), width), tokenizer.pad_id, np.int32)
        mask = np.zeros((len(idx), width - 1), np.float32)
        for r, i in enumerate(idx):
            seq, n_cont = rows[i]
            tokens[r, :len(seq)] = seq
            mask[r, len(seq) - 1 - n_cont:len(seq) - 1] = 1.0
        scores = score_rows(model, pad_rows(tokens, batch_size, tokenizer.pad_id),
                            pad_rows(mask, batch_size))
        logp[idx] = np.asarray(scores.logp, np.float64)[:len(idx)]
        greedy[idx] = np.asarray(scores.greedy)[:len(idx)]
    return logp, greedy, np.asarray([n for _, n in rows])


def _choices(example: dict, fmt: str) -> tuple[str, list[str], int]:
    if fmt == "hellaswag":
        return example["ctx"], [" " + e for e in example["endings"]], int(example["label"])
    return example["goal"], [" " + example["sol1"], " " + example["sol2"]], int(example["label"])


def multiple_choice(model: nnx.Module, tokenizer: Tokenizer, examples: Sequence[dict],
                    fmt: str, batch_size: int = 8, max_len: int | None = None,
                    progress: bool = False) -> dict:
    """HellaSwag / PIQA examples → dict(acc, acc_norm, n)."""
    items = [_choices(e, fmt) for e in examples]
    pairs = [(ctx, ch) for ctx, chs, _ in items for ch in chs]
    logp, _, _ = score_continuations(model, tokenizer, pairs, batch_size, max_len, progress)
    acc = acc_norm = 0
    k = 0
    for ctx, chs, label in items:
        lp = logp[k:k + len(chs)]
        nbytes = np.asarray([len(ch.encode("utf-8")) for ch in chs])
        acc += int(np.argmax(lp) == label)
        acc_norm += int(np.argmax(lp / nbytes) == label)
        k += len(chs)
    return dict(acc=acc / len(items), acc_norm=acc_norm / len(items), n=len(items))


def lambada(model: nnx.Module, tokenizer: Tokenizer, examples: Sequence[dict],
            batch_size: int = 8, max_len: int | None = None, progress: bool = False) -> dict:
    """LAMBADA examples → dict(acc (greedy last word), loglik (mean per example),
    ppl (per last-word token), n)."""
    pairs = []
    for e in examples:
        text = e["text"].rstrip()
        cut = text.rfind(" ")
        if cut <= 0:
            raise ValueError(f"LAMBADA text needs a context and a last word: {text[:60]!r}")
        pairs.append((text[:cut], text[cut:]))
    logp, greedy, n_tok = score_continuations(model, tokenizer, pairs, batch_size, max_len,
                                              progress)
    return dict(acc=float(greedy.mean()), loglik=float(logp.mean()),
                ppl=math.exp(-logp.sum() / n_tok.sum()), n=len(pairs))


def evaluate_jsonl(model: nnx.Module, tokenizer: Tokenizer, path: str, fmt: str | None = None,
                   batch_size: int = 8, max_len: int | None = None,
                   progress: bool = False) -> dict:
    """Scores a jsonl file (format detected from its first example unless given)."""
    examples = load_jsonl(path)
    fmt = detect_format(examples[0]) if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "lambada":
        result = lambada(model, tokenizer, examples, batch_size, max_len, progress)
    else:
        result = multiple_choice(model, tokenizer, examples, fmt, batch_size, max_len, progress)
    return dict(format=fmt, **result)
