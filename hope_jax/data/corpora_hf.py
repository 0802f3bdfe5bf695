"""Hugging Face datasets as document streams (`data.corpus = "hf_dataset"`, docs/data.md).

The dataset is opened with `datasets.load_dataset(name, config, streaming=True)`: rows are read as
they are needed, from the Hub or from a local dataset folder, and never held whole in memory, so
`hope-jax data prepare` can tokenize a corpus far larger than RAM into its shards. The "train" split
is the training data. A "validation", "valid" or "test" split, when the dataset has one, is the
held-out split; otherwise whole train documents are held out by a hash of their text
(`data.held_out_fraction`), as for user files.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .documents import Document

HELD_OUT_SPLITS = ("validation", "valid", "test")


def open_streaming(name: str, config_name: str = "") -> Any:
    """`datasets.load_dataset(name, config_name or None, streaming=True)`: an IterableDatasetDict.

    Raises a clear error when the name is empty, `datasets` is not installed, or the dataset has
    no "train" split."""
    if not name:
        raise ValueError("data.corpus='hf_dataset' needs data.hf_dataset (a dataset name or a "
                         "local dataset folder)")
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"data.hf_dataset={name!r} needs the `datasets` package: pip install "
                          "datasets (or `pip install hope-jax[hf]`)") from e
    loaded = datasets.load_dataset(name, config_name or None, streaming=True)
    if "train" not in loaded:
        raise ValueError(f"dataset {name!r} has no 'train' split (has {list(loaded)})")
    return loaded


def held_out_split(loaded: Any) -> str | None:
    """The dataset's own held-out split, or None (then the train split is hashed)."""
    return next((s for s in HELD_OUT_SPLITS if s in loaded), None)


def split_documents(loaded: Any, split: str, text_field: str, name: str = "") -> Iterator[Document]:
    """The split's non-blank texts in order, as Documents named "<split>:<row>"."""
    for i, row in enumerate(loaded[split]):
        if text_field not in row:
            raise ValueError(f"dataset {name!r} split {split!r}: no column {text_field!r} "
                             f"(has {sorted(row)}); set data.text_field")
        text = row[text_field]
        if text and text.strip():
            yield Document(f"{split}:{i}", text)


Documents = Callable[[], Iterator[Document]]


def hf_documents(name: str, config_name: str, text_field: str
                 ) -> tuple[Documents, Documents | None]:
    """(train documents, held-out documents or None): functions that stream the splits afresh at
    every call."""
    loaded = open_streaming(name, config_name)
    held = held_out_split(loaded)
    train = lambda: split_documents(loaded, "train", text_field, name)
    valid = (lambda: split_documents(loaded, held, text_field, name)) if held else None
    return train, valid


__all__ = ["HELD_OUT_SPLITS", "held_out_split", "hf_documents", "open_streaming",
           "split_documents"]
