"""Reading prepared ArrayRecord shards (`shard_writer.prepare_shards`): `open_prepared(dir)` gives a
`PreparedShards`, which `train_iterator`, `eval_batches` and the trainer use like `PreparedData`.

A split is read as its packed token stream: `tokens(split)` is a lazy `TokenStream` whose slices
read only the records they cover (random access through ArrayRecordDataSource), so no host holds
the corpus in memory.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import storage
from .shards import SplitInfo
from .tokenizers import Tokenizer

FORMAT = "hope_jax.prepared_shards"
VERSION = 1
INDEX = "index.json"


class PreparedDirError(ValueError):
    """The prepared-data directory itself is wrong (foreign files, another config's shards, a
    damaged index or shard); the message names it."""


def read_index(root: Any) -> dict | None:
    """The index of a complete prepared directory, None when it has none; raises ValueError for
    an index that is not one of ours."""
    from etils import epath
    path = epath.Path(root) / INDEX
    if not path.exists():
        return None
    try:
        index = json.loads(path.read_text())
    except ValueError as e:
        raise PreparedDirError(f"{path}: unreadable index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise PreparedDirError(f"{path} is not the index of prepared shards (format {FORMAT!r})")
    if index.get("version") != VERSION:
        raise PreparedDirError(f"{path}: prepared-shards version {index.get('version')!r}, "
                               f"this hope_jax reads version {VERSION}: prepare the data again")
    return index


class TokenStream:
    """A split's token stream [tokens] from its shards: `stream[a:b]` → a numpy array (uint16 or
    uint32, like a memmap slice), `np.asarray(stream)` reads all of it. Picklable (the readers
    are opened lazily in each process)."""

    def __init__(self, root: str, split: dict, dtype: str, record_tokens: int):
        self.paths = [f"{_join(root, s['file'])}[0:{s['records']}]" for s in split["shards"]]
        self.tokens, self.record_tokens = int(split["tokens"]), int(record_tokens)
        self.dtype = np.dtype(dtype)
        self._source = None

    @property
    def shape(self) -> tuple[int]:
        return (self.tokens,)

    ndim = 1

    def __len__(self) -> int:
        return self.tokens

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_source"} | {"_source": None}

    def _records(self, first: int, last: int) -> np.ndarray:
        """Records first..last (inclusive) as one array."""
        if self._source is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource
            self._source = ArrayRecordDataSource(self.paths)
        if last - first < 4:        # one window: __getitems__'s thread pool costs more
            raw = [self._source[i] for i in range(first, last + 1)]
        else:
            raw = self._source.__getitems__(list(range(first, last + 1)))
        little = self.dtype.newbyteorder("<")
        out = np.concatenate([np.frombuffer(r, dtype=little) for r in raw])
        return out.astype(self.dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.tokens if key < 0 else 0)
            if not 0 <= i < self.tokens:
                raise IndexError(f"token {key} is outside the stream of {self.tokens}")
            return self[i:i + 1][0]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"a TokenStream takes an index or a contiguous slice, not {key!r}")
        start, stop, _ = key.indices(self.tokens)
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        R = self.record_tokens
        first, last = start // R, (stop - 1) // R
        return self._records(first, last)[start - first * R:stop - first * R]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0:self.tokens]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"TokenStream({self.tokens} tokens, {len(self.paths)} shards)"


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else os.path.join(root, name)


def _read_tokenizer(root: str) -> Tokenizer:
    """The tokenizer saved beside the shards (tokenizer.json, + tokenizer.model for bpe)."""
    from etils import epath

    from .byte_tokenizer import TOKENIZER_JSON, ByteTokenizer
    from .sentencepiece_tokenizer import MODEL_FILE, SentencePieceTokenizer
    meta = json.loads((epath.Path(root) / TOKENIZER_JSON).read_text())
    if meta.get("kind") == "byte":
        return ByteTokenizer()
    return SentencePieceTokenizer.from_file(_join(root, MODEL_FILE))


@dataclass(frozen=True)
class PreparedShards:
    """A prepared directory: its path, the tokenizer, the splits (SplitInfo.path is the
    directory) and the index."""
    root: str
    tokenizer: Tokenizer
    splits: dict[str, SplitInfo]
    index: dict = field(repr=False, compare=False)

    def tokens(self, split: str = "train") -> TokenStream:
        """The split's token stream, read lazily from its shards."""
        if split not in self.splits:
            raise KeyError(f"no split {split!r} in {self.root} (has {sorted(self.splits)})")
        return TokenStream(self.root, self.index["splits"][split], self.index["dtype"],
                           self.index["record_tokens"])

    def document_starts(self, split: str) -> np.ndarray:
        """int64 [documents]: each document's first token in the split's stream."""
        from etils import epath
        name = self.index["splits"][split]["doc_starts"]
        return np.frombuffer((epath.Path(self.root) / name).read_bytes(), dtype="<i8")

    def documents(self, split: str, limit: int) -> list[np.ndarray]:
        """The first `limit` documents of a split as token arrays (each ending with eos)."""
        starts = self.document_starts(split)[:limit + 1].tolist()
        stream = self.tokens(split)
        ends = starts[1:] + [len(stream)]
        return [np.asarray(stream[a:b]) for a, b in list(zip(starts, ends))[:limit]]


def open_prepared(root: str | os.PathLike) -> PreparedShards:
    """Opens a directory written by `prepare_shards` (local or an etils.epath location); a missing
    or incomplete one is an error naming it and what to run."""
    from etils import epath
    root = storage.resolve(root)
    path = epath.Path(root)
    if not path.exists():
        raise FileNotFoundError(f"prepared data directory {root} does not exist (write it with "
                                f"`hope-jax data prepare --config.data.prepared_dir={root}`)")
    index = read_index(path)
    if index is None:
        raise FileNotFoundError(f"{root} holds no prepared shards ({INDEX} is missing: not "
                                "written by `hope-jax data prepare`, or not finished)")
    splits = {}
    for name, s in index["splits"].items():
        for shard in s["shards"]:
            f = path / shard["file"]
            if not f.exists():
                raise FileNotFoundError(f"{root}: shard {shard['file']} listed in {INDEX} is "
                                        "missing")
            if not storage.is_remote(root) and os.path.getsize(f) != shard["size"]:
                raise PreparedDirError(f"{root}: shard {shard['file']} has "
                                       f"{os.path.getsize(f)} bytes, {INDEX} says "
                                       f"{shard['size']} (damaged or partly copied)")
        splits[name] = SplitInfo(path=root, documents=int(s["documents"]),
                                 tokens=int(s["tokens"]), bytes=int(s["bytes"]))
    return PreparedShards(root=root, tokenizer=_read_tokenizer(root), splits=splits, index=index)


def verify_prepared(root: str | os.PathLike) -> None:
    """Re-reads every shard and checks its sha256 against the index (slow: reads everything)."""
    import hashlib

    from etils import epath
    prepared = open_prepared(root)
    for s in prepared.index["splits"].values():
        for shard in s["shards"]:
            digest = hashlib.sha256((epath.Path(prepared.root) / shard["file"]).read_bytes())
            if digest.hexdigest() != shard["sha256"]:
                raise PreparedDirError(f"{prepared.root}: shard {shard['file']} does not match "
                                       f"its sha256 in {INDEX}")


class ShardWindowReader:
    """Window index → int32 [T + 1] tokens of a TokenStream (`pipeline.WindowReader` for shards):
    window i = stream[i*T : i*T + T + 1]; picklable for grain worker processes."""

    def __init__(self, stream: TokenStream, seq_len: int):
        self.stream, self.seq_len = stream, seq_len
        self.tokens = stream.tokens
        self.windows = (stream.tokens - 1) // seq_len

    def __call__(self, index: int) -> np.ndarray:
        start = (int(index) % self.windows) * self.seq_len
        return np.asarray(self.stream[start:start + self.seq_len + 1], dtype=np.int32)


__all__ = ["INDEX", "PreparedDirError", "PreparedShards", "ShardWindowReader", "TokenStream",
           "open_prepared", "read_index", "verify_prepared"]
