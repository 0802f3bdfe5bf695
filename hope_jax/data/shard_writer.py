"""prepare_shards(): a corpus → tokenizer → ArrayRecord shards in one directory, written once and
read by every host (docs/data.md, "Prepared shards").

Documents are streamed (never the whole corpus in memory) and tokenized in worker processes, in
work units of about 1 MB of text; the main process writes the results in document order, so the
output is byte-identical whatever the number of workers. Each split is one packed token stream
(every document's tokens followed by eos, as in `shards.py`) cut into records of `record_tokens`
tokens (the last one shorter), little-endian uint16 (vocab ≤ 65535) or uint32, `records_per_shard`
records per ArrayRecord file (group_size 1: random access). `index.json` (written last) holds the
counts, the shard list with sizes and sha256, the tokenizer's identity and the checksum of the data
config; the tokenizer itself is saved beside it. The directory is built in a temporary folder and
renamed into place (a remote etils.epath location: copied, index.json last).
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import storage
from .byte_tokenizer import ByteTokenizer
from .cache_key import config_value, key_fields
from .documents import Document, _unit_hash
from .downloads import _sha256
from .progress import bar, stage
from .sentencepiece_tokenizer import SentencePieceTokenizer
from .shard_reader import FORMAT, INDEX, VERSION, PreparedDirError, open_prepared, read_index
from .shards import shard_dtype
from .tokenizers import Tokenizer
from .validation import check_token_ids

SPLITS = ("train", "valid")
RECORD_TOKENS = 2048            # tokens per record (4 KB at uint16)
RECORDS_PER_SHARD = 16384       # records per ArrayRecord file (32 Mi tokens)
WRITER_OPTIONS = "group_size:1,zstd:3"
UNIT_BYTES = 1 << 20            # text per work unit sent to a worker
UNIT_DOCUMENTS = 1024
TOKENIZER_SAMPLE_BYTES = 50_000_000   # bpe trained on the train split's first 50 MB of text
MAX_AUTO_WORKERS = 8            # data.prepare_workers=-1: at most this many (≈ 60 MB each)

DocumentStream = Callable[[], Iterator[tuple[str, Document]]]


# ----------------------------------------------------------------------------- documents
def _hash_split(documents: Callable[[], Iterator[Document]], fraction: float) -> DocumentStream:
    """`split_by_hash(…, by_text=True)` as a stream: a first pass keeps only the hashes' extremes
    (for its "both splits get a document" rule), the stream routes each document as it comes."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {fraction}")
    count = held = 0
    lo = hi = None
    for i, doc in enumerate(documents()):
        key = (_unit_hash(doc.text), i)
        count, held = count + 1, held + (key[0] < fraction)
        lo = key if lo is None or key < lo else lo
        hi = key if hi is None or key > hi else hi
    if count < 2:
        raise ValueError(f"the corpus has {count} document(s): the held-out split needs at least "
                         "2 (one is held out)")
    force_valid = lo[1] if held == 0 else None
    force_train = hi[1] if held == count else None

    def stream() -> Iterator[tuple[str, Document]]:
        for i, doc in enumerate(documents()):
            valid = (_unit_hash(doc.text) < fraction or i == force_valid) and i != force_train
            yield ("valid" if valid else "train"), doc
    return stream


def document_stream(config: Any, cache_dir: str, progress: bool) -> DocumentStream:
    """A function giving, each time it is called, the corpus's (split, document) pairs in order:
    the same documents and splits as `prepare()`. `files` are read as a stream (a .txt file is one
    document, a .jsonl line one document) and hf_dataset is read in streaming mode
    (`corpora_hf`); the pip corpora and python_stdlib are small and are read whole."""
    corpus = config_value(config, "corpus", "en_pip")
    fraction = float(config_value(config, "held_out_fraction", 0.02))
    if corpus == "hf_dataset":
        from .corpora_hf import hf_documents
        train, valid = hf_documents(config_value(config, "hf_dataset", ""),
                                    config_value(config, "hf_config", ""),
                                    config_value(config, "text_field", "text"))
        if valid is None:
            return _hash_split(train, fraction)
        return lambda: itertools.chain((("train", d) for d in train()),
                                       (("valid", d) for d in valid()))
    if corpus == "files":
        from .user_files import read_user_documents
        files = list(config_value(config, "files", ()) or ())
        if not files:
            raise ValueError("data.corpus='files' needs data.files (paths or globs of "
                             ".txt/.jsonl/.parquet)")
        text_field = config_value(config, "text_field", "text")
        return _hash_split(lambda: (Document(n, t) for n, t in read_user_documents(
            files, text_field)), fraction)
    from .prepare import _corpus_documents
    docs = _corpus_documents(config, cache_dir, progress)
    return lambda: ((split, d) for split in SPLITS for d in docs.get(split, ()))


# ----------------------------------------------------------------------------- tokenizer
def make_tokenizer(config: Any, stream: DocumentStream, progress: bool) -> Tokenizer:
    """data.tokenizer: byte; bpe from data.tokenizer_path (an existing sentencepiece model); or
    bpe trained on the train split's first TOKENIZER_SAMPLE_BYTES of text."""
    kind = config_value(config, "tokenizer", "byte")
    path = str(config_value(config, "tokenizer_path", "") or "")
    if kind == "byte":
        if path:
            raise ValueError(f"data.tokenizer_path={path!r} is a sentencepiece model: set "
                             "data.tokenizer='bpe' to use it")
        return ByteTokenizer()
    if kind != "bpe":
        raise ValueError(f"unknown tokenizer kind {kind!r}: expected 'byte' or 'bpe'")
    if path:
        return SentencePieceTokenizer.from_file(path)
    vocab_size = int(config_value(config, "vocab_size", 8192))
    stage(f"training a {vocab_size}-piece BPE tokenizer on the train split's first "
          f"{TOKENIZER_SAMPLE_BYTES / 1e6:.0f} MB", progress)

    def sample() -> Iterator[str]:
        taken = 0
        for split, doc in stream():
            if taken >= TOKENIZER_SAMPLE_BYTES:
                return
            if split == "train":
                taken += len(doc.text.encode("utf-8"))
                yield doc.text
    return SentencePieceTokenizer.train(sample(), vocab_size)


def _spec(tokenizer: Tokenizer) -> tuple:
    return ("byte",) if isinstance(tokenizer, ByteTokenizer) else ("bpe", tokenizer._proto)


def _from_spec(spec: tuple) -> Tokenizer:
    return ByteTokenizer() if spec[0] == "byte" else SentencePieceTokenizer(spec[1])


# ----------------------------------------------------------------------------- tokenizing
def encode_documents(tokenizer: Tokenizer, texts: list[str]
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """(packed tokens: each text's ids then eos, in the shard dtype; token count of each
    document incl. eos, int64; UTF-8 bytes of the texts)."""
    batched = getattr(tokenizer, "encode_batch", None)
    encoded = batched(texts) if batched else [tokenizer.encode(t) for t in texts]
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    stream = np.concatenate([p for ids in encoded for p in (ids, eos)])
    check_token_ids(stream, tokenizer.vocab_size)
    lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int64)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return stream.astype(shard_dtype(tokenizer.vocab_size)), lengths, n_bytes


_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(spec: tuple) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = _from_spec(spec)
    if isinstance(_WORKER_TOKENIZER, SentencePieceTokenizer):
        _WORKER_TOKENIZER.encode_threads = 1    # the processes are the parallelism


def _encode_unit(texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    return encode_documents(_WORKER_TOKENIZER, texts)


def _units(stream: DocumentStream) -> Iterator[tuple[str, list[str]]]:
    """(split, texts): consecutive documents of one split, about UNIT_BYTES of text each."""
    pending: dict[str, list[str]] = {s: [] for s in SPLITS}
    size = dict.fromkeys(SPLITS, 0)
    for split, doc in stream():
        pending[split].append(doc.text)
        size[split] += len(doc.text)
        if size[split] >= UNIT_BYTES or len(pending[split]) >= UNIT_DOCUMENTS:
            yield split, pending[split]
            pending[split], size[split] = [], 0
    for split in SPLITS:
        if pending[split]:
            yield split, pending[split]


def default_workers(tokenizer: Tokenizer) -> int:
    """-1 (auto): for bpe the CPUs this process may use, at most MAX_AUTO_WORKERS (beyond that
    the main process, which reads and writes, is the limit); in-process for byte (encoding bytes
    is cheaper than sending the text away)."""
    if isinstance(tokenizer, ByteTokenizer):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_WORKERS, cpus or 1))


def _encoded(units: Iterator[tuple[str, list[str]]], tokenizer: Tokenizer, workers: int
             ) -> Iterator[tuple[str, tuple[np.ndarray, np.ndarray, int]]]:
    """The encoded units in input order; at most 2 × workers units in flight (bounded memory)."""
    if workers == 0:
        for split, texts in units:
            yield split, encode_documents(tokenizer, texts)
        return
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn: no fork of a process that may run jax threads. An executor, not a Pool: a worker
    # that dies breaks it (an error) where a Pool would start new ones forever.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(_spec(tokenizer),))
    try:
        pending: collections.deque = collections.deque()
        for split, texts in units:
            pending.append((split, pool.submit(_encode_unit, texts)))
            if len(pending) >= 2 * workers:
                split, result = pending.popleft()
                yield split, result.result()
        while pending:
            split, result = pending.popleft()
            yield split, result.result()
    except BrokenProcessPool as e:
        raise RuntimeError("a tokenizer worker process died (out of memory, or a script calling "
                           "prepare_shards with workers lacks an `if __name__ == \"__main__\":` "
                           "guard); try data.prepare_workers=0 to tokenize in-process") from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- writing
class _SplitWriter:
    """One split's packed stream → fixed-size records → ArrayRecord files, plus the start offset
    of every document (`<split>-doc_starts.bin`, little-endian int64)."""

    def __init__(self, directory: str, split: str, dtype: np.dtype, record_tokens: int,
                 records_per_shard: int):
        self.directory, self.split, self.R, self.per_shard = (directory, split, record_tokens,
                                                              records_per_shard)
        self.dtype = dtype.newbyteorder("<")
        self.buffer = np.empty(0, dtype=dtype)
        self.shards: list[dict] = []
        self.writer = None
        self.tokens = self.documents = self.bytes = self.records = 0
        self.starts_name = f"{split}-doc_starts.bin"
        self.starts = open(os.path.join(directory, self.starts_name), "wb")

    def add(self, stream: np.ndarray, lengths: np.ndarray, n_bytes: int) -> None:
        starts = self.tokens + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.starts.write(starts.astype("<i8").tobytes())
        self.tokens += int(stream.size)
        self.documents += int(lengths.size)
        self.bytes += int(n_bytes)
        data = np.concatenate([self.buffer, stream]) if self.buffer.size else stream
        full = data.size // self.R
        for k in range(full):
            self._write(data[k * self.R:(k + 1) * self.R])
        self.buffer = data[full * self.R:].copy()

    def _write(self, record: np.ndarray) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter
        if self.writer is None or self.shards[-1]["records"] == self.per_shard:
            self._close_shard()
            name = f"{self.split}-{len(self.shards):05d}.array_record"
            self.writer = ArrayRecordWriter(os.path.join(self.directory, name), WRITER_OPTIONS)
            self.shards.append(dict(file=name, records=0, tokens=0))
        self.writer.write(record.astype(self.dtype).tobytes())
        self.shards[-1]["records"] += 1
        self.shards[-1]["tokens"] += int(record.size)
        self.records += 1

    def _close_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            shard = self.shards[-1]
            path = os.path.join(self.directory, shard["file"])
            shard.update(size=os.path.getsize(path), sha256=_sha256(path))

    def close(self) -> dict:
        if self.buffer.size:
            self._write(self.buffer)
            self.buffer = self.buffer[:0]
        self._close_shard()
        self.starts.close()
        return dict(tokens=self.tokens, documents=self.documents, bytes=self.bytes,
                    records=self.records, doc_starts=self.starts_name, shards=self.shards)


# ----------------------------------------------------------------------------- the directory
def shard_fields(config: Any, record_tokens: int = RECORD_TOKENS,
                 records_per_shard: int = RECORDS_PER_SHARD) -> dict[str, Any]:
    """Everything the shards depend on (the worker count is not: the output is the same)."""
    fields = dict(key_fields(config), shard_format=VERSION, record_tokens=int(record_tokens),
                  records_per_shard=int(records_per_shard), writer_options=WRITER_OPTIONS)
    if fields["tokenizer"] == "bpe" and "tokenizer_model" not in fields:
        fields["tokenizer_sample_bytes"] = TOKENIZER_SAMPLE_BYTES
    return json.loads(json.dumps(fields, default=str))    # as index.json holds them


def config_checksum(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _build(tmp: str, config: Any, fields: dict, cache_dir: str, workers: int | None,
           progress: bool) -> None:
    stream = document_stream(config, cache_dir, progress)
    tokenizer = make_tokenizer(config, stream, progress)
    tokenizer.save(tmp)
    if workers is None or workers < 0:
        workers = default_workers(tokenizer)
    dtype = shard_dtype(tokenizer.vocab_size)
    R, per_shard = fields["record_tokens"], fields["records_per_shard"]
    writers = {s: _SplitWriter(tmp, s, dtype, R, per_shard) for s in SPLITS}
    stage(f"tokenizing in {workers} worker processes" if workers else "tokenizing in-process",
          progress)
    for split, encoded in bar(_encoded(_units(stream), tokenizer, workers), "tokenizing units",
                              progress):
        writers[split].add(*encoded)
    splits = {s: w.close() for s, w in writers.items()}
    for split, info in splits.items():
        if not info["documents"]:
            raise ValueError(f"data.corpus={config_value(config, 'corpus')!r} gave no {split!r} "
                             "documents (need at least 2 documents, or a larger "
                             "held_out_fraction)")
        stage(f"{split}: {info['documents']} documents, {info['tokens']} tokens, "
              f"{info['bytes']} bytes, {len(info['shards'])} shards", progress)
    token_info = dict(kind=tokenizer.kind, vocab_size=int(tokenizer.vocab_size),
                      eos_id=int(tokenizer.eos_id), pad_id=int(tokenizer.pad_id))
    if isinstance(tokenizer, SentencePieceTokenizer):
        token_info.update(sha256=tokenizer.proto_sha256(),
                          source=str(config_value(config, "tokenizer_path", "") or "trained"))
    index = dict(format=FORMAT, version=VERSION, config_checksum=config_checksum(fields),
                 fields=fields, tokenizer=token_info, dtype=dtype.name, byte_order="little",
                 record_tokens=R, records_per_shard=per_shard, writer_options=WRITER_OPTIONS,
                 splits=splits)
    with open(os.path.join(tmp, INDEX), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)


def _differences(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {a.get(k)!r} there vs {b.get(k)!r} now" for k in keys[:4])


def prepare_shards(data_config: Any, out_dir: str | os.PathLike | None = None, *,
                   num_workers: int | None = None, progress: bool = True,
                   record_tokens: int = RECORD_TOKENS,
                   records_per_shard: int = RECORDS_PER_SHARD):
    """Writes the corpus of `data_config` (the config's `data` group) as ArrayRecord shards into
    `out_dir` (default data.prepared_dir; a local path or an etils.epath location) once and
    returns it opened (`PreparedShards`). A directory already holding the shards of this config
    is returned as it is; one holding another config's shards, or other files, is an error.

    num_workers: tokenizer processes (default data.prepare_workers; -1 = auto: the CPUs, at most
    8, for bpe, in-process for byte; 0 = in-process). The shards are identical for every count."""
    from etils import epath
    out = out_dir if out_dir is not None else config_value(data_config, "prepared_dir", "")
    if not out:
        raise ValueError("prepare_shards needs an output directory (data.prepared_dir)")
    if record_tokens < 1 or records_per_shard < 1:
        raise ValueError(f"record_tokens and records_per_shard must be ≥ 1, got "
                         f"{record_tokens}, {records_per_shard}")
    out = storage.resolve(out)
    if num_workers is None:
        num_workers = int(config_value(data_config, "prepare_workers", -1))
    fields = shard_fields(data_config, record_tokens, records_per_shard)
    target = epath.Path(out)
    index = read_index(target)
    if index is not None:
        if index.get("config_checksum") == config_checksum(fields):
            stage(f"{out} already holds these shards", progress)
            return open_prepared(out)
        raise PreparedDirError(f"{out} holds the shards of another data config "
                               f"({_differences(index.get('fields', {}), fields)}); choose "
                               "another data.prepared_dir or delete that directory")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PreparedDirError(f"{out} exists and is not a prepared-shards directory (no "
                               f"{INDEX}); choose a new or empty directory")
    cache_dir = os.path.abspath(os.path.expanduser(config_value(data_config, "cache_dir",
                                                                "~/.cache/hope_jax")))
    tmp = _staging_dir(out)
    stage(f"preparing {config_value(data_config, 'corpus', 'en_pip')} into {out}", progress)
    try:
        _build(tmp, data_config, fields, cache_dir, num_workers, progress)
        _publish(tmp, out, target, fields)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_prepared(out)


def _staging_dir(out: str) -> str:
    """A fresh folder to build in: beside `out` when local (so the publish is one rename),
    else a local temp folder."""
    if storage.is_remote(out):
        return tempfile.mkdtemp(prefix="hope_jax-shards-")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = os.path.join(os.path.dirname(out), f".tmp-{os.path.basename(out)}-{os.getpid()}-"
                                              f"{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    return tmp


def _publish(tmp: str, out: str, target, fields: dict) -> None:
    """Moves the built shards into place atomically: one rename locally; remotely each file is
    copied with the index last, so a reader never sees an index without its shards."""
    if storage.is_remote(out):
        storage.upload_tree(tmp, out, last=INDEX)
        return
    if os.path.isdir(out):
        os.rmdir(out)            # empty (checked by the caller)
    try:
        os.replace(tmp, out)
    except OSError:              # another process finished first: fine if the same
        index = read_index(target)
        if index is None or index.get("config_checksum") != config_checksum(fields):
            raise


__all__ = ["RECORDS_PER_SHARD", "RECORD_TOKENS", "config_checksum", "document_stream",
           "encode_documents", "make_tokenizer", "prepare_shards", "shard_fields"]
