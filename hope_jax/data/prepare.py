"""prepare(): corpus → tokenizer → token shards, cached under `<cache_dir>/prepared/<name>-<key>`.

A cache entry is complete only once its manifest.json (holding the full key) exists: it is built in
a temporary folder beside it and moved into place with os.replace, so a killed run leaves nothing
that a later run would read.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cache_key import cache_key, config_value, key_fields
from .documents import Document
from .progress import stage
from .sentencepiece_tokenizer import SentencePieceTokenizer
from .shards import SplitInfo, open_tokens, write_split
from .tokenizers import Tokenizer, load_tokenizer, train_tokenizer

MANIFEST = "manifest.json"
SPLITS = ("train", "valid")


@dataclass(frozen=True)
class PreparedData:
    """A prepared cache entry: its folder, the tokenizer and the tokenized splits."""
    root: str
    tokenizer: Tokenizer
    splits: dict[str, SplitInfo]

    def tokens(self, split: str = "train") -> np.ndarray:
        """The split's token stream, memory-mapped: [tokens] uint16/uint32."""
        if split not in self.splits:
            raise KeyError(f"no split {split!r} in {self.root} (has {sorted(self.splits)})")
        return open_tokens(self.splits[split], self.tokenizer.vocab_size)

    def documents(self, split: str, limit: int) -> list[np.ndarray]:
        """The first `limit` documents of a split as token arrays (each ending with eos)."""
        with open(os.path.join(self.root, f"{split}.json")) as f:
            offsets = json.load(f)["offsets"]
        tokens = self.tokens(split)
        ends = list(offsets[1:]) + [len(tokens)]
        return [np.asarray(tokens[a:b]) for a, b in list(zip(offsets, ends))[:limit]]


def _corpus_documents(config: Any, cache_dir: str, progress: bool) -> dict[str, list[Document]]:
    corpus = config_value(config, "corpus", "en_pip")
    if corpus == "en_pip":
        from .corpora_pip import en_pip
        return en_pip(cache_dir, progress)
    if corpus == "japanese":
        from .corpora_pip import japanese
        return japanese(cache_dir, progress)
    from . import corpora_local
    if corpus == "python_stdlib":
        return corpora_local.python_stdlib(int(config_value(config, "max_bytes", 4_000_000)))
    text_field = config_value(config, "text_field", "text")
    fraction = float(config_value(config, "held_out_fraction", 0.02))
    if corpus == "files":
        return corpora_local.user_files(config_value(config, "files", ()), text_field, fraction)
    return corpora_local.hf_dataset(config_value(config, "hf_dataset", ""), text_field, fraction,
                                    config_value(config, "hf_config", ""))


def _load(root: str, key: str) -> PreparedData | None:
    """The cache entry at root if it is complete and has this key, else None."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            manifest = json.load(f)
        if manifest.get("key") != key:
            return None
        tokenizer = load_tokenizer(root)
        splits = {}
        for name, s in manifest["splits"].items():
            path = os.path.join(root, s["file"])
            if os.path.getsize(path) != s["tokens"] * s["itemsize"]:
                return None
            splits[name] = SplitInfo(path=path, documents=s["documents"], tokens=s["tokens"],
                                     bytes=s["bytes"])
        return PreparedData(root=root, tokenizer=tokenizer, splits=splits)
    except (OSError, ValueError, KeyError):
        return None


def _build(tmp: str, config: Any, key: str, cache_dir: str, progress: bool) -> None:
    docs = _corpus_documents(config, cache_dir, progress)
    for split in SPLITS:
        if not docs.get(split):
            raise ValueError(f"data.corpus={config_value(config, 'corpus')!r} gave no {split!r} "
                             "documents (need at least 2 documents, or a larger held_out_fraction)")
    kind = config_value(config, "tokenizer", "byte")
    vocab_size = int(config_value(config, "vocab_size", 8192))
    if kind == "bpe" and not config_value(config, "tokenizer_path", ""):
        stage(f"training a {vocab_size}-piece BPE tokenizer on {len(docs['train'])} documents",
              progress)
    tokenizer_path = str(config_value(config, "tokenizer_path", "") or "")
    if kind == "bpe" and tokenizer_path:
        tokenizer = SentencePieceTokenizer.from_file(tokenizer_path)
        tokenizer.save(tmp)
    else:
        tokenizer = train_tokenizer(kind, (d.text for d in docs["train"]), vocab_size, tmp)
    splits = {}
    for split, split_docs in docs.items():
        info = write_split(tmp, split, split_docs, tokenizer, progress=progress)
        stage(f"{split}: {info.documents} documents, {info.tokens} tokens, {info.bytes} bytes",
              progress)
        splits[split] = dict(file=os.path.basename(info.path), documents=info.documents,
                             tokens=info.tokens, bytes=info.bytes,
                             itemsize=os.path.getsize(info.path) // max(info.tokens, 1))
    manifest = dict(key=key, fields=key_fields(config), splits=splits)
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def prepare(data_config: Any, *, progress: bool = True) -> PreparedData:
    """Builds (once) and returns the tokenized train/valid splits for `data_config` (the config's
    `data` group). A second call with the same config reads the cache and does no work.

    With data.prepared_dir set it only opens the shards `hope-jax data prepare` wrote there
    (a `PreparedShards`, used the same way; hope_jax/data/shard_reader.py) and builds nothing."""
    prepared_dir = str(config_value(data_config, "prepared_dir", "") or "")
    if prepared_dir:
        from .shard_reader import open_prepared
        return open_prepared(prepared_dir)
    cache_dir = os.path.abspath(os.path.expanduser(config_value(data_config, "cache_dir",
                                                                "~/.cache/hope_jax")))
    key = cache_key(data_config)
    corpus = config_value(data_config, "corpus", "en_pip")
    name = f"{corpus}-{config_value(data_config, 'tokenizer', 'byte')}"
    root = os.path.join(cache_dir, "prepared", f"{name}-{key[:16]}")
    cached = _load(root, key)
    if cached is not None:
        return cached
    stage(f"preparing {name} into {root}", progress)
    tmp = os.path.join(cache_dir, "prepared",
                       f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        _build(tmp, data_config, key, cache_dir, progress)
        done = _load(root, key)             # another process (a host of this run) may have
        if done is not None:                # finished first: its entry is complete, keep it
            return done
        if os.path.lexists(root):           # an incomplete or stale entry: never read, replaced
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:                     # another process finished first
            if _load(root, key) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prepared = _load(root, key)
    if prepared is None:
        raise RuntimeError(f"prepared data at {root} is unreadable right after writing it")
    return prepared
