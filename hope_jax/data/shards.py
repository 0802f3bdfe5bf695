"""Token shards: one flat token stream per split in `<root>/<split>.bin`, described by
`<split>.json`.

The stream is every document's tokens followed by eos. The dtype is uint16 when the vocabulary
fits (≤ 65535 ids) and uint32 otherwise; readers memory-map the file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .documents import Document
from .progress import bar
from .tokenizers import Tokenizer
from .validation import check_token_ids


@dataclass(frozen=True)
class SplitInfo:
    """A tokenized split: its .bin path, document / token counts and UTF-8 bytes of its text."""
    path: str
    documents: int
    tokens: int
    bytes: int


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def _encode_all(tokenizer: Tokenizer, docs: Sequence[Document], desc: str, progress: bool
                ) -> list[np.ndarray]:
    chunk = 32
    out: list[np.ndarray] = []
    batched = getattr(tokenizer, "encode_batch", None)
    for start in bar(range(0, len(docs), chunk), desc, progress, total=-(-len(docs) // chunk)):
        texts = [d.text for d in docs[start:start + chunk]]
        out.extend(batched(texts) if batched else [tokenizer.encode(t) for t in texts])
    return out


def write_split(directory: str, split: str, docs: Sequence[Document], tokenizer: Tokenizer,
                *, progress: bool = False) -> SplitInfo:
    """Tokenizes `docs` into `<directory>/<split>.bin` + `<split>.json`; returns their SplitInfo."""
    if not docs:
        raise ValueError(f"split {split!r} has no documents")
    dtype = shard_dtype(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    encoded = _encode_all(tokenizer, docs, f"tokenizing {split}", progress)
    pieces = [p for ids in encoded for p in (ids, eos)]
    stream = np.concatenate(pieces)
    check_token_ids(stream, tokenizer.vocab_size)
    lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    path = os.path.join(directory, f"{split}.bin")
    stream.astype(dtype).tofile(path)
    n_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
    meta = dict(split=split, dtype=dtype.name, documents=len(docs), tokens=int(stream.size),
                bytes=n_bytes, names=[d.name for d in docs], offsets=offsets.tolist())
    with open(os.path.join(directory, f"{split}.json"), "w") as f:
        json.dump(meta, f)
    return SplitInfo(path=path, documents=len(docs), tokens=int(stream.size), bytes=n_bytes)


def open_tokens(info: SplitInfo, vocab_size: int) -> np.ndarray:
    """The split's token stream, memory-mapped read-only: [tokens] uint16/uint32."""
    return np.memmap(info.path, dtype=shard_dtype(vocab_size), mode="r", shape=(info.tokens,))
