"""Zero-shot log-likelihood scoring of user-brought jsonl files (lm-eval-harness style).

Formats (one JSON object per line; the format is detected from the keys):

  LAMBADA    {"text": ...}                                    predict the last word
  HellaSwag  {"ctx": ..., "endings": [...], "label": i}       pick the ending
  PIQA       {"goal": ..., "sol1": ..., "sol2": ..., "label": i}

A continuation c after a context x is scored as log p(c | x) = Σ_t log p(c_t | x, c_<t); the
context starts with BOS. Multiple choice: acc picks argmax log p; acc_norm picks argmax
log p / bytes(c) (the harness's byte-length normalisation). LAMBADA: acc is greedy exact match
of every token of " " + last word; also the mean log-likelihood of the last word and its
perplexity per word (ppl; ppl_token per token).

Official releases: HellaSwag's jsonl ({"ctx", "endings", "label", …}) is read as is; PIQA's
labels live in a separate `<name>-labels.lst` beside `<name>.jsonl`, found automatically.

Rows are padded to a power-of-two length (≥ 32) and a fixed batch, so there are few compiles.
Sequences longer than `max_len` keep their last max_len + 1 tokens (the context is cut on the left).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
from flax import nnx

from hope_jax.data.bpb import pad_rows
from hope_jax.eval._protocols import Tokenizer
from hope_jax.eval._scoring import bucket_length, progress_bar, score_rows

FORMATS = ("lambada", "hellaswag", "piqa")


class ZeroShotFileError(ValueError):
    """A zero-shot file (or its labels file) that cannot be scored; the message starts with
    `path:line:`."""


def _jsonl_rows(path: str) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line; a bad line raises naming path:line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ZeroShotFileError(f"{path}: cannot read: {e.strerror or e}") from None
    rows = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8-sig" if n == 1 else "utf-8"))
        except UnicodeDecodeError as e:
            raise ZeroShotFileError(f"{path}:{n}: not UTF-8 text ({e.reason})") from None
        except ValueError as e:
            raise ZeroShotFileError(f"{path}:{n}: not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ZeroShotFileError(f"{path}:{n}: expected a JSON object, got "
                                    f"{type(obj).__name__}")
        rows.append((n, obj))
    if not rows:
        raise ZeroShotFileError(f"{path} holds no examples")
    return rows


def load_jsonl(path: str) -> list[dict]:
    """The JSON objects of a jsonl file (blank lines skipped; errors name path:line)."""
    return [obj for _, obj in _jsonl_rows(path)]


def labels_file_for(path: str) -> str | None:
    """The official PIQA release keeps labels apart: `valid.jsonl` + `valid-labels.lst`
    (one 0/1 per line). The labels file beside `path`, if there is one."""
    stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
    candidate = stem + "-labels.lst"
    return candidate if os.path.isfile(candidate) else None


def _read_labels(path: str, count: int, data_path: str) -> list[int]:
    labels = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                labels.append(int(line.strip()))
            except ValueError:
                raise ZeroShotFileError(f"{path}:{n}: expected an integer label, got "
                                        f"{line.strip()[:40]!r}") from None
    if len(labels) != count:
        raise ZeroShotFileError(f"{path}: {len(labels)} labels for the {count} examples of "
                                f"{data_path}")
    return labels


def _label(value, n_choices: int, where: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)      # HF exports write "0"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZeroShotFileError(f"{where}: label must be an integer, got {value!r}")
    if not 0 <= value < n_choices:
        raise ZeroShotFileError(f"{where}: label {value} is out of range for {n_choices} "
                                f"choices (0..{n_choices - 1})")
    return value


def _checked(example: dict, fmt: str, where: str) -> dict:
    """The example with its fields checked for `fmt` (label as an int)."""
    def text(key):
        if not isinstance(example.get(key), str):
            raise ZeroShotFileError(f"{where}: {fmt} needs a string {key!r}, got keys "
                                    f"{sorted(example)}")
        return example[key]

    if fmt == "lambada":
        body = text("text").rstrip()
        if body.rfind(" ") <= 0:
            raise ZeroShotFileError(f"{where}: LAMBADA text needs a context and a last word: "
                                    f"{body[:60]!r}")
        return example
    if fmt == "hellaswag":
        text("ctx")
        endings = example.get("endings")
        if not isinstance(endings, list) or len(endings) < 2 or not all(
                isinstance(e, str) and e for e in endings):
            raise ZeroShotFileError(f"{where}: 'endings' must be a list of ≥ 2 non-empty strings")
        if "label" not in example:
            raise ZeroShotFileError(f"{where}: no 'label' (the test split has none)")
        return dict(example, label=_label(example["label"], len(endings), where))
    text("goal"), text("sol1"), text("sol2")
    if "label" not in example:
        raise ZeroShotFileError(f"{where}: no 'label': PIQA keeps them in a separate file; put "
                                "it beside as <name>-labels.lst")
    return dict(example, label=_label(example["label"], 2, where))


def load_examples(path: str, fmt: str | None = None, labels_path: str | None = None
                  ) -> tuple[str, list[dict]]:
    """(format, checked examples) of a zero-shot jsonl file; every problem raises
    ZeroShotFileError naming path:line. PIQA labels come from the rows or from `labels_path`
    (default: `<name>-labels.lst` beside the file, as in the official release)."""
    rows = _jsonl_rows(path)
    fmt = detect_format(rows[0][1], f"{path}:{rows[0][0]}") if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    labels_path = labels_path or (labels_file_for(path) if fmt == "piqa" else None)
    if labels_path is not None:
        labels = _read_labels(labels_path, len(rows), path)
        rows = [(n, dict(obj, label=label)) for (n, obj), label in zip(rows, labels)]
    return fmt, [_checked(obj, fmt, f"{path}:{n}") for n, obj in rows]


def detect_format(example: dict, where: str = "") -> str:
    """"lambada", "hellaswag" or "piqa" from an example's keys."""
    if {"ctx", "endings"} <= example.keys():
        return "hellaswag"
    if {"goal", "sol1", "sol2"} <= example.keys():
        return "piqa"
    if "text" in example:
        return "lambada"
    raise ZeroShotFileError(f"{where + ': ' if where else ''}unknown zero-shot format with keys "
                            f"{sorted(example)}; expected one of {{text}} | "
                            "{ctx, endings, label} | {goal, sol1, sol2, label}")


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
    for _, chs, label in items:
        lp = logp[k:k + len(chs)]
        nbytes = np.asarray([len(ch.encode("utf-8")) for ch in chs])
        acc += int(np.argmax(lp) == label)
        acc_norm += int(np.argmax(lp / nbytes) == label)
        k += len(chs)
    return dict(acc=acc / len(items), acc_norm=acc_norm / len(items), n=len(items))


def lambada(model: nnx.Module, tokenizer: Tokenizer, examples: Sequence[dict],
            batch_size: int = 8, max_len: int | None = None, progress: bool = False) -> dict:
    """LAMBADA examples → dict(acc (greedy last word), loglik (mean log p of the last word),
    ppl (per word: exp(−mean log p of the last word), as LAMBADA reports it), ppl_token (per
    last-word token: depends on the tokenizer), n)."""
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
                ppl=math.exp(-logp.mean()), ppl_token=math.exp(-logp.sum() / n_tok.sum()),
                n=len(pairs))


def evaluate_jsonl(model: nnx.Module, tokenizer: Tokenizer, path: str, fmt: str | None = None,
                   batch_size: int = 8, max_len: int | None = None, progress: bool = False,
                   labels_path: str | None = None) -> dict:
    """Scores a jsonl file (format detected from its first example unless given; see
    `load_examples` for the checks and PIQA's separate labels file)."""
    fmt, examples = load_examples(path, fmt, labels_path)
    if fmt == "lambada":
        result = lambada(model, tokenizer, examples, batch_size, max_len, progress)
    else:
        result = multiple_choice(model, tokenizer, examples, fmt, batch_size, max_len, progress)
    return dict(format=fmt, **result)
