"""prepare(): whole-document held-out split, shards, caching, recovery from a killed run
(hope_jax/data/prepare.py, shards.py, cache_key.py, documents.py)."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from hope_jax.data import ByteTokenizer, SentencePieceTokenizer, prepare, read_user_files

from .conftest import files_config, random_documents, write_documents


def _split_documents(prepared, split: str) -> list[str]:
    """The split's stream decoded back into documents (each ends with eos)."""
    stream = np.asarray(prepared.tokens(split)).astype(np.int64)
    eos = prepared.tokenizer.eos_id
    assert stream[-1] == eos
    cuts = np.flatnonzero(stream == eos)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    return [prepared.tokenizer.decode(stream[s:e]) for s, e in zip(starts, cuts)]


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_held_out_by_whole_documents(tmp_path, tokenizer):
    """Every document lands whole in exactly one split; counts, bytes and dtype match the text."""
    rng = random.Random(3 if tokenizer == "byte" else 4)
    docs = random_documents(rng, 30, 20, 120)
    files = write_documents(tmp_path / "docs", docs)
    prepared = prepare(files_config(tmp_path / "cache", files, tokenizer=tokenizer, vocab_size=400),
                       progress=False)
    kind = ByteTokenizer if tokenizer == "byte" else SentencePieceTokenizer
    assert isinstance(prepared.tokenizer, kind)
    train, valid = _split_documents(prepared, "train"), _split_documents(prepared, "valid")
    assert train and valid and not set(train) & set(valid)
    assert sorted(train + valid) == sorted(docs)
    for split, split_docs in (("train", train), ("valid", valid)):
        info = prepared.splits[split]
        assert info.documents == len(split_docs)
        assert info.bytes == sum(len(d.encode("utf-8")) for d in split_docs)
        assert info.tokens == os.path.getsize(info.path) // 2 == prepared.tokens(split).shape[0]
        assert prepared.tokens(split).dtype == np.uint16


def test_prepare_is_cached(tmp_path, fixture_files):
    """The second call rewrites nothing; a different config gets a different entry."""
    config = files_config(tmp_path / "cache", fixture_files)
    first = prepare(config, progress=False)
    files = sorted(os.listdir(first.root))
    assert {"manifest.json", "tokenizer.json", "train.bin", "valid.bin"} <= set(files)
    mtimes = {f: os.stat(os.path.join(first.root, f)).st_mtime_ns for f in files}
    second = prepare(config, progress=False)
    assert second == first
    assert {f: os.stat(os.path.join(first.root, f)).st_mtime_ns for f in files} == mtimes
    other = prepare(files_config(tmp_path / "cache", fixture_files, held_out_fraction=0.5),
                    progress=False)
    assert other.root != first.root
    assert sorted(os.listdir(os.path.dirname(first.root))) == sorted(
        os.path.basename(p.root) for p in (first, other))       # no temp folders left behind


def test_half_written_cache_is_never_used(tmp_path, fixture_files):
    """An entry without its manifest, a truncated shard or a stale temp folder is rebuilt, not
    read."""
    config = files_config(tmp_path / "cache", fixture_files)
    good = prepare(config, progress=False)
    expected = np.array(good.tokens("train"))
    os.remove(os.path.join(good.root, "manifest.json"))         # killed before the manifest
    with open(good.splits["train"].path, "r+b") as f:
        f.truncate(10)
    stale = os.path.join(os.path.dirname(good.root),
                         ".tmp-" + os.path.basename(good.root)[-16:] + "-1-x")
    os.makedirs(stale)
    rebuilt = prepare(config, progress=False)
    assert rebuilt.root == good.root and os.path.exists(os.path.join(rebuilt.root, "manifest.json"))
    np.testing.assert_array_equal(rebuilt.tokens("train"), expected)
    with open(rebuilt.splits["valid"].path, "r+b") as f:        # a shard that lost its tail
        f.truncate(4)
    again = prepare(config, progress=False)
    assert again.splits["valid"].tokens * 2 == os.path.getsize(again.splits["valid"].path)


def test_manifest_records_the_split(tmp_path, fixture_files):
    """manifest.json and <split>.json describe the shards (dtype, counts, document names)."""
    prepared = prepare(files_config(tmp_path / "cache", fixture_files), progress=False)
    with open(os.path.join(prepared.root, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["fields"]["corpus"] == "files" and set(manifest["splits"]) == {"train", "valid"}
    with open(os.path.join(prepared.root, "valid.json")) as f:
        meta = json.load(f)
    assert meta["dtype"] == "uint16" and len(meta["names"]) == prepared.splits["valid"].documents
    documents = sum(s.documents for s in prepared.splits.values())
    assert len(list(read_user_files(fixture_files))) == documents


def test_prepare_config_errors(tmp_path, fixture_files):
    """Unknown corpora, a files corpus with no files and a one-document corpus are named."""
    with pytest.raises(ValueError, match="'wiki'"):
        prepare(files_config(tmp_path, fixture_files, corpus="wiki"), progress=False)
    with pytest.raises(ValueError, match="data.files"):
        prepare(files_config(tmp_path, ()), progress=False)
    with pytest.raises(ValueError, match="'valid'"):
        prepare(files_config(tmp_path, fixture_files[:1]), progress=False)
    with pytest.raises(ValueError, match="'wordpiece'"):
        prepare(files_config(tmp_path, fixture_files, tokenizer="wordpiece"), progress=False)
