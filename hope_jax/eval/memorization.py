"""Test-time memorisation: bits per byte over a stream of documents, memory reset or carried.

Each document is read in chunks of T tokens through `model.forward(chunk, cache)`. At every
document boundary the *context* state restarts (attention KV caches and short-conv buffers), and
the *memory* state (the levels: Titans / self-modifying memories, in-context CMS levels, linear
recurrences) is either

  * off — reset to its initial value, as in training (D33): each document is scored alone;
  * on  — carried over from the previous document: what the memories wrote while reading earlier
          documents is still there (test-time learning across documents). A new document starts
          at position 0 (`Decoder.starts_document_at`): the memory states continue in fresh form,
          and Titans MAC's segments restart as for a fresh sequence.

For a pure-attention model both give identical numbers (its state is only context), which the
tests check; for memory models they differ.

Documents are truncated to whole chunks: a document of n tokens scores ⌊(n−1)/T⌋ · T targets
(documents shorter than T + 1 tokens are skipped), so no padding ever enters a memory.
At most `max_chunks` chunks are read per document (the KV cache holds max_chunks · T tokens).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from hope_jax.core.fresh_form import fresh_form_like
from hope_jax.data.bpb import bpb_summary
from hope_jax.eval._scoring import progress_bar, target_logprobs
from hope_jax.models.context_state import reset_context


@nnx.jit
def _chunk_nll(model: nnx.Module, tokens: jax.Array, cache: Any) -> tuple[jax.Array, Any]:
    """tokens [B, T+1] → (Σ NLL of the T targets (nats) [B], cache after the T inputs)."""
    logits, cache = model.forward(tokens[:, :-1], cache)
    return -target_logprobs(logits, tokens[:, 1:]).sum(axis=-1), cache


def memorization_bpb(model: nnx.Module, documents: Sequence[np.ndarray],
                     token_bytes: np.ndarray, chunk_len: int, max_chunks: int = 8,
                     progress: bool = False) -> dict:
    """bits per byte over `documents` (int token arrays, read in order) with memory off and on.

    Returns dict(off=dict(bpb, nats, tokens, bytes), on=dict(...), gain=off.bpb − on.bpb,
    gain_se and gain_ci95 (its standard error and normal 95 % interval, paired over documents;
    with a handful of documents the interval is a rough guide), per_document=[dict(tokens, bytes,
    nats_off, nats_on)], documents=number scored).
    """
    token_bytes = np.asarray(token_bytes, np.int64)
    docs = []
    for d in documents:
        d = np.asarray(d, np.int32)
        n = min((len(d) - 1) // chunk_len, max_chunks)
        if n >= 1:
            docs.append(d[: n * chunk_len + 1])
    if not docs:
        raise ValueError(f"no document has more than chunk_len = {chunk_len} tokens")
    fresh = model.init_state(1, max_chunks * chunk_len)
    doc_tokens = np.asarray([len(d) - 1 for d in docs], np.float64)
    doc_bytes = np.asarray([token_bytes[d[1:]].sum() for d in docs], np.float64)
    out, per_doc = {}, {}
    new_text_fresh = model.starts_document_at(chunk_len)  # every read is whole chunks of T
    for mode in ("off", "on"):
        cache = fresh
        nats = np.zeros(len(docs))
        for i, d in enumerate(progress_bar(docs, progress, desc=f"memorisation {mode}",
                                           unit="doc")):
            if mode == "off":
                cache = fresh
            else:  # the context restarts; a new text takes the fresh-sequence path where it
                # can, as in carried-memory training (Titans MAC's segments restart)
                cache = reset_context(cache, fresh)
                if new_text_fresh:
                    cache = fresh_form_like(cache, fresh)
            for c in range((len(d) - 1) // chunk_len):
                piece = d[c * chunk_len: (c + 1) * chunk_len + 1][None]
                nll, cache = _chunk_nll(model, piece, cache)
                nats[i] += float(nll[0])
        per_doc[mode] = nats
        out[mode] = dict(bpb=nats.sum() / math.log(2) / doc_bytes.sum(), nats=float(nats.sum()),
                         tokens=int(doc_tokens.sum()), bytes=int(doc_bytes.sum()))
    out["gain"] = out["off"]["bpb"] - out["on"]["bpb"]
    # Paired over documents: the gain is the ratio Σ (nats_off − nats_on) / (ln 2 · Σ bytes);
    # its standard error is the ratio estimator's, as for held-out bpb (data/bpb.py).
    paired = bpb_summary(per_doc["off"] - per_doc["on"], doc_tokens, doc_bytes)
    out["gain_se"], out["gain_ci95"] = paired["bpb_se"], paired["bpb_ci95"]
    out["per_document"] = [dict(tokens=int(t), bytes=int(b), nats_off=float(a), nats_on=float(o))
                           for t, b, a, o in zip(doc_tokens, doc_bytes, per_doc["off"],
                                                 per_doc["on"])]
    out["documents"] = len(docs)
    return out
