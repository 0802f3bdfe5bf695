"""Prepared ArrayRecord shards: parallel preparation gives identical bytes, the stream equals
prepare()'s, per-host reading partitions the windows, iterators resume exactly, an existing
sentencepiece model is used and saved, and mistakes name their culprit
(hope_jax/data/shard_writer.py, shard_reader.py; the `data prepare` / `train` CLI paths)."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from hope_jax.data import (PreparedShards, SentencePieceTokenizer, open_prepared, prepare,
                           prepare_shards, train_iterator)
from hope_jax.data import shard_writer

from .conftest import files_config, random_documents, write_documents

T = 8
SMALL = dict(record_tokens=16, records_per_shard=8)   # many records and several shards


def _tree(root) -> dict[str, bytes]:
    return {name: open(os.path.join(root, name), "rb").read() for name in sorted(os.listdir(root))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Random documents as .txt files, a small BPE model trained on them (as tokenizer_path),
    and their prepared shards (byte tokenizer, in-process)."""
    root = tmp_path_factory.mktemp("shards")
    docs = random_documents(random.Random(11), 30, 30, 120)
    files = write_documents(root / "docs", docs)
    model = root / "model"
    SentencePieceTokenizer.train(docs, 400).save(model)
    config = files_config(root / "cache", files, held_out_fraction=0.2)
    shards = prepare_shards(config, root / "byte", num_workers=0, progress=False, **SMALL)
    return dict(root=root, files=files, config=config, shards=shards,
                model=str(model / "tokenizer.model"))


@pytest.mark.fast
def test_workers_give_identical_bytes_and_tokenizer_path_is_used(corpus, monkeypatch):
    """1 and 2 tokenizer processes (bpe from an existing model, several work units) write
    byte-identical directories; the model is saved beside the shards and read back."""
    monkeypatch.setattr(shard_writer, "UNIT_DOCUMENTS", 3)
    config = dict(corpus["config"], tokenizer="bpe", tokenizer_path=corpus["model"])
    one = prepare_shards(config, corpus["root"] / "bpe1", num_workers=1, progress=False, **SMALL)
    two = prepare_shards(config, corpus["root"] / "bpe2", num_workers=2, progress=False, **SMALL)
    assert _tree(one.root) == _tree(two.root)
    assert sum(n.endswith(".array_record") for n in os.listdir(one.root)) > 2
    given = SentencePieceTokenizer.from_file(corpus["model"])
    assert isinstance(one, PreparedShards) and one.tokenizer == given
    reopened = prepare(dict(config, prepared_dir=str(one.root)), progress=False)
    assert reopened.tokenizer == given
    assert reopened.index["tokenizer"]["sha256"] == given.proto_sha256()
    stream = np.asarray(reopened.tokens("train"))
    cuts = np.flatnonzero(stream == given.eos_id)
    assert len(cuts) == reopened.splits["train"].documents and cuts[-1] == len(stream) - 1


def test_stream_and_batches_equal_prepare(corpus):
    """The shards hold prepare()'s token streams, counts and documents; train batches and
    held-out batches are the same as from prepare()'s .bin files."""
    from hope_jax.data import eval_batches
    legacy, shards = prepare(corpus["config"], progress=False), corpus["shards"]
    for split in ("train", "valid"):
        np.testing.assert_array_equal(np.asarray(shards.tokens(split)),
                                      np.asarray(legacy.tokens(split)))
        assert shards.splits[split].documents == legacy.splits[split].documents
        assert shards.splits[split].bytes == legacy.splits[split].bytes
        np.testing.assert_array_equal(shards.tokens(split)[13:61], legacy.tokens(split)[13:61])
    for a, b in zip(shards.documents("valid", 3), legacy.documents("valid", 3)):
        np.testing.assert_array_equal(a, b)
    kw = dict(seq_len=T, batch_size=4, seed=5)
    a, b = train_iterator(shards, **kw), train_iterator(legacy, **kw)
    for _ in range(3):
        np.testing.assert_array_equal(next(a)["tokens"], next(b)["tokens"])
    for x, y in zip(eval_batches(shards, "valid", seq_len=T, batch_size=4),
                    eval_batches(legacy, "valid", seq_len=T, batch_size=4)):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])


@pytest.mark.fast
def test_two_hosts_partition_the_windows_and_resume_exactly(corpus):
    """Hosts 0 and 1 of 2 read disjoint halves of an epoch that miss fewer than 2 windows; a
    fresh iterator given a saved (JSON) state continues exactly where the first stopped."""
    shards = corpus["shards"]
    stream = np.asarray(shards.tokens("train"), dtype=np.int32)
    n = (len(stream) - 1) // T
    index = {stream[i * T:i * T + T + 1].tobytes(): i for i in range(n)}
    assert len(index) == n
    seen = []
    for host in range(2):
        it = train_iterator(shards, seq_len=T, batch_size=1, seed=2, process_index=host,
                            process_count=2)
        seen.append([index[next(it)["tokens"][0].tobytes()] for _ in range(n // 2)])
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 2 * (n // 2) >= n - 1
    it = train_iterator(shards, seq_len=T, batch_size=2, seed=2, process_index=1,
                        process_count=2)
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it)["tokens"] for _ in range(4)]
    resumed = train_iterator(shards, seq_len=T, batch_size=2, seed=2, process_index=1,
                             process_count=2)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)


def test_directory_mistakes_name_the_culprit(corpus, tmp_path):
    """Missing / foreign / other-config / damaged directories are errors naming the path."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_prepared(tmp_path / "none")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        open_prepared(tmp_path / "foreign")
    with pytest.raises(ValueError, match="is not a prepared-shards directory"):
        prepare_shards(corpus["config"], tmp_path / "foreign", progress=False)
    root = str(corpus["shards"].root)
    with pytest.raises(ValueError, match="record_tokens: 16 there vs 2048 now"):
        prepare_shards(corpus["config"], root, progress=False)
    again = prepare_shards(corpus["config"], root, progress=False, **SMALL)   # no work
    assert again.index == corpus["shards"].index
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in _tree(root).items():
        (copy / name).write_bytes(data[:-1] if name == "train-00001.array_record" else data)
    with pytest.raises(ValueError, match="train-00001.array_record has .*damaged"):
        open_prepared(copy)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def _cli(argv, capsys) -> tuple[int, str, str]:
    from hope_jax import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hope-jax"] + argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_prepare_then_bad_paths_fail_early(corpus, tmp_path, capsys):
    """`data prepare` with data.prepared_dir writes the shards; train with a missing directory,
    a bad tokenizer_path or a misspelt key, and `data prepare` into a folder of other files,
    fail in one line naming the key, creating or changing nothing."""
    from hope_jax import cli
    out_dir = tmp_path / "prepared"
    files = os.path.join(os.path.dirname(corpus["files"][0]), "*.txt")   # the same, in order
    data = ["--config.data.corpus=files", f"--config.data.files={files}",
            "--config.data.held_out_fraction=0.2", f"--config.data.prepared_dir={out_dir}",
            "--config.data.prepare_workers=0", "--config.train.global_batch=8"]  # 8 devices
    cli.main(["hope-jax", "data", "prepare"] + data)
    out = capsys.readouterr().out
    assert f"{out_dir}" in out and "train" in out
    np.testing.assert_array_equal(np.asarray(open_prepared(out_dir).tokens("valid")),
                                  np.asarray(corpus["shards"].tokens("valid")))
    workdir = tmp_path / "run"
    cases = [([f"--config.data.prepared_dir={tmp_path}/missing"],
              f"config.data.prepared_dir={tmp_path}/missing: prepared data directory"),
             (["--config.data.tokenizer=bpe", f"--config.data.tokenizer_path={tmp_path}/no.model"],
              "config.data.tokenizer_path: cannot read the sentencepiece model"),
             ([f"--config.data.tokenizer_path={corpus['model']}"],
              "config.data.tokenizer_path: a sentencepiece model needs data.tokenizer='bpe'"),
             ([f"--config.data.prepared_dirs={out_dir}"], "unknown key 'prepared_dirs'")]
    for args, message in cases:
        code, _, err = _cli(["train", f"--workdir={workdir}", "--config.train.global_batch=8"]
                            + args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not workdir.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = [a if "prepared_dir" not in a else f"--config.data.prepared_dir={foreign}" for a in data]
    code, _, err = _cli(["data", "prepare"] + args, capsys)
    assert code == 2 and f"config.data.prepared_dir={foreign}: " in err, err
    assert "not a prepared-shards directory" in err and os.listdir(foreign) == ["notes.txt"]
