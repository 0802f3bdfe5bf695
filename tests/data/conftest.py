"""Shared fixtures for the data tests: the checked-in tiny corpus and files-corpus configs."""
from __future__ import annotations

import os
import random
import string

import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "data")
FIXTURE_FILES = (os.path.join(FIXTURES, "garden.txt"), os.path.join(FIXTURES, "notes.jsonl"))


def files_config(cache_dir, files=FIXTURE_FILES, **overrides) -> dict:
    """A data config for corpus="files" with its cache in `cache_dir`."""
    cfg = dict(corpus="files", files=tuple(str(f) for f in files), text_field="text",
               hf_dataset="", held_out_fraction=0.25, tokenizer="byte", vocab_size=300,
               cache_dir=str(cache_dir))
    cfg.update(overrides)
    return cfg


def random_documents(rng: random.Random, count: int, min_len: int, max_len: int) -> list[str]:
    """Random documents of letters, spaces and some non-ASCII characters."""
    alphabet = string.ascii_letters + "      .,\n" + "éß日本🙂"
    return ["".join(rng.choice(alphabet)
                    for _ in range(rng.randint(min_len, max_len))).strip() + "."
            for _ in range(count)]


def write_documents(directory, docs: list[str]) -> list[str]:
    """Writes each document to its own .txt file; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, doc in enumerate(docs):
        path = os.path.join(directory, f"doc{i:03d}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)
        paths.append(path)
    return paths


@pytest.fixture
def fixture_files() -> tuple[str, ...]:
    return FIXTURE_FILES
