"""train_iterator: packing, determinism, epoch coverage, process shards, resumable state
(hope_jax/data/pipeline.py)."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from hope_jax.data import prepare, train_iterator

from .conftest import files_config, random_documents, write_documents

T = 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A byte-level corpus of random documents (every window of T+1 tokens is distinct)."""
    root = tmp_path_factory.mktemp("pipeline")
    docs = random_documents(random.Random(7), 24, 30, 90)
    files = write_documents(root / "docs", docs)
    return prepare(files_config(root / "cache", files, held_out_fraction=0.2), progress=False)


def _window_index(prepared) -> dict[bytes, int]:
    """Window contents → window index i (window i = stream[i*T : i*T + T + 1])."""
    stream = np.asarray(prepared.tokens("train"), dtype=np.int32)
    n = (stream.shape[0] - 1) // T
    index = {stream[i * T:i * T + T + 1].tobytes(): i for i in range(n)}
    assert len(index) == n, "random corpus produced a repeated window"
    return index


def _take(it, k: int) -> list[np.ndarray]:
    return [next(it)["tokens"] for _ in range(k)]


def _rows(batches, index) -> list[int]:
    return [index[row.tobytes()] for b in batches for row in b]


@pytest.mark.fast
def test_batches_are_packed_windows(prepared):
    """Batches are int32 [B, T+1] and each row is a window stream[i*T : i*T+T+1]."""
    index = _window_index(prepared)
    batches = _take(train_iterator(prepared, seq_len=T, batch_size=4, seed=0), 5)
    for b in batches:
        assert b.dtype == np.int32 and b.shape == (4, T + 1)
    assert len(_rows(batches, index)) == 20


def test_deterministic_per_seed(prepared):
    """The same seed gives the same batches; another seed gives another order."""
    a = _take(train_iterator(prepared, seq_len=T, batch_size=4, seed=1), 6)
    b = _take(train_iterator(prepared, seq_len=T, batch_size=4, seed=1), 6)
    c = _take(train_iterator(prepared, seq_len=T, batch_size=4, seed=2), 6)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))


def test_epoch_covers_every_window_once_and_reshuffles(prepared):
    """With batch 1 an epoch is a permutation of all windows; the next epoch is another permutation;
    with batch 4 an epoch holds n - n % 4 distinct windows."""
    index = _window_index(prepared)
    n = len(index)
    it = train_iterator(prepared, seq_len=T, batch_size=1, seed=3)
    first, second = _rows(_take(it, n), index), _rows(_take(it, n), index)
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second
    rows = _rows(_take(train_iterator(prepared, seq_len=T, batch_size=4, seed=3), n // 4), index)
    assert len(set(rows)) == len(rows) == n - n % 4


def test_processes_are_disjoint_and_cover_the_epoch(prepared):
    """Processes 0 and 1 of 2 read disjoint, equal halves that together cover the epoch."""
    index = _window_index(prepared)
    n = len(index)
    per = n // 2
    parts = [_rows(_take(train_iterator(prepared, seq_len=T, batch_size=1, seed=5, process_index=p,
                                        process_count=2), per), index) for p in (0, 1)]
    assert len(set(parts[0])) == len(set(parts[1])) == per
    assert not set(parts[0]) & set(parts[1])
    assert len(set(parts[0]) | set(parts[1])) == 2 * per
    with pytest.raises(ValueError, match="process_index=2"):
        train_iterator(prepared, seq_len=T, batch_size=1, seed=5, process_index=2, process_count=2)


@pytest.mark.parametrize("stop", [3, 17])
def test_resume_from_state(prepared, stop):
    """set_state(get_state()) after a JSON round trip continues exactly like the uninterrupted
    iterator, including across the epoch boundary."""
    n = len(_window_index(prepared)) // 4
    full = _take(train_iterator(prepared, seq_len=T, batch_size=4, seed=9), stop + n + 2)
    it = train_iterator(prepared, seq_len=T, batch_size=4, seed=9)
    for _ in range(stop):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    resumed = train_iterator(prepared, seq_len=T, batch_size=4, seed=9)
    resumed.set_state(state)
    np.testing.assert_array_equal(np.stack(_take(resumed, n + 2)), np.stack(full[stop:]))


def test_too_few_windows_is_an_error(prepared):
    """A batch larger than a process's share of windows is rejected with the numbers."""
    with pytest.raises(ValueError, match="batch_size=100000"):
        train_iterator(prepared, seq_len=T, batch_size=100000, seed=0)
    assert next(itertools.islice(train_iterator(prepared, seq_len=1, batch_size=2, seed=0), 1))[
        "tokens"].shape == (2, 2)
