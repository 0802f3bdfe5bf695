"""Corpora already on the machine: the interpreter's standard library, the user's files, HF
datasets."""
from __future__ import annotations

import os
import sysconfig
from typing import Any

from .documents import Document, _unit_hash, split_by_hash
from .user_files import read_user_documents

STDLIB_HELD_OUT = 0.05
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
              "pydoc_data"}  # pydoc_data: one generated 0.7 MB string of prose


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def python_stdlib(max_bytes: int) -> dict[str, list[Document]]:
    """C1: the stdlib's .py files without test/ and tests/ dirs, capped at `max_bytes` of text
    (files taken in a fixed hash order); ~5% of whole files held out by a hash of the path."""
    root = stdlib_dir()
    paths = []
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s not in _SKIP_DIRS)
        paths.extend(os.path.relpath(os.path.join(d, f), root) for f in files if f.endswith(".py"))
    docs, total = [], 0
    for rel in sorted(paths, key=lambda p: _unit_hash("order:" + p)):
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        text = data.decode("utf-8", errors="replace")
        if not text.strip():
            continue
        if max_bytes > 0 and total + len(data) > max_bytes and docs:
            continue
        docs.append(Document(rel, text))
        total += len(data)
    if len(docs) < 2:
        raise FileNotFoundError(f"fewer than 2 .py files found under the standard library {root}")
    # hold out whole files, taken in a second hash order, until they hold ~5% of the bytes
    held, held_bytes = set(), 0
    for doc in sorted(docs, key=lambda d: _unit_hash("held:" + d.name)):
        if held and held_bytes + len(doc.text) > STDLIB_HELD_OUT * total:
            continue
        held.add(doc.name)
        held_bytes += len(doc.text)
    return {"train": [d for d in docs if d.name not in held],
            "valid": [d for d in docs if d.name in held]}


def user_files(files: Any, text_field: str, held_out_fraction: float) -> dict[str, list[Document]]:
    """data.files via read_user_files; whole documents held out by a hash of their text."""
    if not files:
        raise ValueError("data.corpus='files' needs data.files (paths or globs of "
                         ".txt/.jsonl/.parquet)")
    docs = [Document(n, t) for n, t in read_user_documents(list(files), text_field)]
    return split_by_hash(docs, held_out_fraction, by_text=True)


def hf_dataset(name: str, text_field: str, held_out_fraction: float,
               config_name: str = "") -> dict[str, list[Document]]:
    """A Hugging Face dataset's "train" split (its "validation"/"valid"/"test" split as valid
    when present, else a hash split of train), read into memory (`corpora_hf` streams it)."""
    from .corpora_hf import hf_documents
    train, valid = hf_documents(name, config_name, text_field)
    if valid is not None:
        return {"train": list(train()), "valid": list(valid())}
    return split_by_hash(list(train()), held_out_fraction, by_text=True)
