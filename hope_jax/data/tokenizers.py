"""Tokenizer factory: train one by kind, or load what `save()` wrote."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable

from . import storage
from .byte_tokenizer import TOKENIZER_JSON, ByteTokenizer
from .sentencepiece_tokenizer import SentencePieceTokenizer

Tokenizer = ByteTokenizer | SentencePieceTokenizer
TOKENIZER_KINDS = ("byte", "bpe")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int,
                    directory: str | os.PathLike | None = None) -> Tokenizer:
    """Builds a tokenizer of `kind` ("byte" ignores texts and vocab_size; "bpe" trains on texts)
    and saves it into `directory` when one is given."""
    if kind == "byte":
        tok: Tokenizer = ByteTokenizer()
    elif kind == "bpe":
        tok = SentencePieceTokenizer.train(texts, vocab_size)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: expected one of {TOKENIZER_KINDS}")
    if directory is not None:
        tok.save(directory)
    return tok


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Reads the tokenizer that `save(directory)` wrote (tokenizer.json, plus tokenizer.model for
    bpe); `directory` may be remote (gs://…)."""
    directory = os.fspath(directory)
    if storage.is_remote(directory):
        if not storage.exists(storage.join(directory, TOKENIZER_JSON)):
            raise FileNotFoundError(f"no tokenizer at {directory}")
        local = storage.download_tree(directory)
        try:   # a tokenizer holds its model in memory once loaded
            return load_tokenizer(local)
        finally:
            shutil.rmtree(local, ignore_errors=True)
    path = os.path.join(directory, TOKENIZER_JSON)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"no readable tokenizer at {path}: {e}") from e
    kind = meta.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return SentencePieceTokenizer.load(directory)
    raise ValueError(f"{path}: unknown tokenizer kind {kind!r}: expected one of {TOKENIZER_KINDS}")


def save_tokenizer_once(tok: Tokenizer, directory: str | os.PathLike) -> None:
    """Saves `tok` into `directory` unless a tokenizer is there already; atomic: written beside
    it and renamed into place, so a reader sees all of it or nothing (a training run keeps its
    tokenizer in `<workdir>/tokenizer`, read by generate and eval without the data). A remote
    `directory` (gs://…) gets its files copied up with tokenizer.json last."""
    directory = os.fspath(directory)
    if storage.is_remote(directory):
        if storage.exists(storage.join(directory, TOKENIZER_JSON)):
            return
        local = tempfile.mkdtemp(prefix="hope_jax_tokenizer_")
        try:
            tok.save(local)
            storage.upload_tree(local, directory, last=TOKENIZER_JSON)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    if os.path.exists(os.path.join(directory, TOKENIZER_JSON)):
        return
    tmp = f"{directory}.tmp-{os.getpid()}"
    try:
        tok.save(tmp)
        if os.path.lexists(directory):  # a leftover without tokenizer.json: never read, replaced
            shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    except OSError:
        if not os.path.exists(os.path.join(directory, TOKENIZER_JSON)):
            raise
    finally:  # another process may have put one there first
        shutil.rmtree(tmp, ignore_errors=True)
