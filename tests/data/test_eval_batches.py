"""eval_batches: sequential windows over a whole split, fixed shapes, masked padding
(hope_jax/data/eval_batches.py)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from hope_jax.data import eval_batches, prepare

from .conftest import files_config, random_documents, write_documents


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    files = write_documents(root / "docs", random_documents(random.Random(11), 10, 40, 160))
    return prepare(files_config(root / "cache", files, held_out_fraction=0.3), progress=False)


@pytest.mark.parametrize("seq_len,batch_size", [(7, 3), (16, 2), (5, 1)])
def test_eval_batches_cover_the_split(prepared, seq_len, batch_size):
    """Masked targets are exactly stream[1:] in order; padding is pad_id with mask 0; shapes
    fixed."""
    stream = np.asarray(prepared.tokens("valid"), dtype=np.int32)
    batches = list(eval_batches(prepared, "valid", seq_len=seq_len, batch_size=batch_size))
    windows = -(-(len(stream) - 1) // seq_len)
    assert len(batches) == -(-windows // batch_size)
    for b in batches:
        assert b["tokens"].shape == (batch_size, seq_len + 1) and b["tokens"].dtype == np.int32
        assert b["mask"].shape == (batch_size, seq_len) and b["mask"].dtype == np.float32
    tokens = np.concatenate([b["tokens"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches]).astype(bool)
    np.testing.assert_array_equal(tokens[:, 1:][mask], stream[1:])
    assert (tokens[:, 1:][~mask] == prepared.tokenizer.pad_id).all()
    np.testing.assert_array_equal(tokens[:windows, 0], stream[:-1:seq_len][:windows])
    assert (mask.sum(axis=1)[windows:] == 0).all()      # filler rows are fully masked
    assert mask.sum() == len(stream) - 1


def test_eval_batches_deterministic_and_limited(prepared):
    """Two passes are identical; max_batches takes windows strided over the whole split (the
    first window, then evenly spaced ones up to the end; the same windows for any batch size);
    the train split works too."""
    a = list(eval_batches(prepared, seq_len=7, batch_size=3))
    b = list(eval_batches(prepared, seq_len=7, batch_size=3))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
    limited = list(eval_batches(prepared, seq_len=7, batch_size=3, max_batches=2))
    assert len(limited) == 2 and np.array_equal(limited[0]["tokens"][0], a[0]["tokens"][0])
    rows = np.concatenate([b["tokens"] for b in a])
    picked = np.concatenate([b["tokens"] for b in limited])
    windows = -(-(len(prepared.tokens("valid")) - 1) // 7)
    expect = [(i * windows) // 6 for i in range(6)]
    np.testing.assert_array_equal(picked, rows[expect])
    assert expect[-1] > windows // 2                      # reaches the second half
    by_one = np.concatenate([b["tokens"] for b in eval_batches(prepared, seq_len=7, batch_size=1,
                                                              windows=6)])
    np.testing.assert_array_equal(by_one, picked)
    assert next(eval_batches(prepared, "train", seq_len=7, batch_size=3))["mask"].all()
    with pytest.raises(KeyError, match="'test'"):
        next(eval_batches(prepared, "test", seq_len=7, batch_size=3))
