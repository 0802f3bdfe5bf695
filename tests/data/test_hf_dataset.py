"""`data.corpus = "hf_dataset"`: a real `datasets` dataset (a local parquet folder, no network)
streamed into prepared shards and into prepare()'s .bin files (hope_jax/data/corpora_hf.py)."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from hope_jax.data import ByteTokenizer, prepare, prepare_shards
from hope_jax.data.corpora_hf import open_streaming

from .conftest import random_documents

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
pytest.importorskip("datasets")

SMALL = dict(record_tokens=16, records_per_shard=8)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _dataset(root, splits: dict[str, list[str]]) -> str:
    """A dataset folder as the Hub lays one out: data/<split>-00000-of-00001.parquet, a text
    column beside an id column."""
    os.makedirs(root / "data")
    for split, texts in splits.items():
        table = pa.table({"id": list(range(len(texts))), "text": texts})
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=7)
    return str(root)


def _config(tmp_path, name: str, **kw) -> dict:
    cfg = dict(corpus="hf_dataset", hf_dataset=name, hf_config="", files=(), text_field="text",
               held_out_fraction=0.25, tokenizer="byte", vocab_size=300,
               cache_dir=str(tmp_path / "cache"))
    cfg.update(kw)
    return cfg


def _expected(texts: list[str]) -> np.ndarray:
    tok = ByteTokenizer()
    return np.concatenate([np.append(tok.encode(t), tok.eos_id) for t in texts if t.strip()])


def test_streamed_splits_become_shards_and_bins(tmp_path):
    """The train and validation splits, blank rows dropped, in order: the shards hold exactly
    their byte tokens, and prepare()'s .bin files agree."""
    rng = random.Random(3)
    train = random_documents(rng, 25, 20, 90)
    train[4] = "   "                                      # blank rows are not documents
    valid = random_documents(rng, 6, 20, 90)
    name = _dataset(tmp_path / "ds", {"train": train, "validation": valid})
    assert type(open_streaming(name)).__name__ == "IterableDatasetDict"   # streamed, not loaded
    config = _config(tmp_path, name)
    shards = prepare_shards(config, tmp_path / "shards", num_workers=0, progress=False, **SMALL)
    legacy = prepare(config, progress=False)
    for split, texts in (("train", train), ("valid", valid)):
        np.testing.assert_array_equal(np.asarray(shards.tokens(split)), _expected(texts))
        np.testing.assert_array_equal(np.asarray(legacy.tokens(split)), _expected(texts))
        assert shards.splits[split].documents == sum(bool(t.strip()) for t in texts)
    index = json.load(open(tmp_path / "shards" / "index.json"))
    assert index["fields"]["hf_dataset"] == name


def test_train_only_dataset_is_split_like_the_same_files(tmp_path):
    """Without a held-out split, whole documents are held out by a hash of their text: the same
    split, and the same tokens, as the same texts given as a .jsonl file."""
    texts = random_documents(random.Random(5), 30, 20, 90)
    name = _dataset(tmp_path / "ds", {"train": texts})
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    hf = prepare_shards(_config(tmp_path, name), tmp_path / "hf", num_workers=0, progress=False,
                        **SMALL)
    files = prepare_shards(_config(tmp_path, "", corpus="files", files=(str(jsonl),)),
                           tmp_path / "files", num_workers=0, progress=False, **SMALL)
    for split in ("train", "valid"):
        np.testing.assert_array_equal(np.asarray(hf.tokens(split)),
                                      np.asarray(files.tokens(split)))
    assert 0 < hf.splits["valid"].documents < hf.splits["train"].documents


def test_missing_column_and_split_name_the_culprit(tmp_path):
    name = _dataset(tmp_path / "ds", {"train": ["a first text", "a second text"]})
    with pytest.raises(ValueError, match="no column 'body'.*'id', 'text'.*data.text_field"):
        prepare_shards(_config(tmp_path, name, text_field="body"), tmp_path / "out",
                       num_workers=0, progress=False)
    only_test = _dataset(tmp_path / "ds2", {"test": ["a text", "another text"]})
    with pytest.raises(ValueError, match="has no 'train' split"):
        open_streaming(only_test)
    with pytest.raises(ValueError, match="needs data.hf_dataset"):
        open_streaming("")
