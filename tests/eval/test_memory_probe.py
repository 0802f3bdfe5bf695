"""The memory probe: writes on vs off, loss by position, JSON-able result and PNG.

A pure-attention model has no writes, so on equals off exactly; for a memory model the writes
change the loss; `memory_writes` restores the flags afterwards.
"""
import json

import numpy as np
import pytest

from hope_jax.eval.memory_probe import (memory_probe, plot_memory_probe, position_summary,
                                        random_windows, summary_lines)
from hope_jax.layers.memory_writes import memory_writes, writing_modules
from eval_helpers import tiny_model

TB = np.asarray([1] * 256 + [0] * 4)
STREAM = np.random.default_rng(0).integers(0, 256, 400).astype(np.int32)


def test_random_windows_are_seeded_slices_and_reject_a_short_stream():
    a, b = random_windows(STREAM, 16, 5, seed=3), random_windows(STREAM, 16, 5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 17)
    for row in a:  # each row is a contiguous slice of the stream
        start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(STREAM, 17)
                                          == row, axis=1))[0])
        np.testing.assert_array_equal(STREAM[start:start + 17], row)
    with pytest.raises(ValueError, match="needs 401"):
        random_windows(STREAM, 400, 1)


def test_position_summary_quarters_and_curve():
    nats = np.tile(np.arange(8, dtype=float), (2, 1)) * np.log(2)
    s = position_summary(nats, np.ones((2, 8)), bins=4)
    np.testing.assert_allclose(s["quarters"], [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_allclose(s["curve"], s["quarters"])
    assert s["last_minus_first"] == pytest.approx(6.0) and s["bpb"] == pytest.approx(3.5)
    # Unit bytes: the paired error is the standard error of the mean of the per-window
    # differences; here every window differs by exactly 6 bits per byte, so it is 0.
    assert s["last_minus_first_se"] == pytest.approx(0.0, abs=1e-12)
    nats = np.random.default_rng(0).gamma(2.0, size=(7, 12))
    s = position_summary(nats, np.ones((7, 12)), bins=4)
    d = (nats[:, 9:].mean(axis=1) - nats[:, :3].mean(axis=1)) / np.log(2)
    assert s["last_minus_first"] == pytest.approx(d.mean())
    assert s["last_minus_first_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(7))


def test_attention_model_is_unchanged_by_the_ablation(tmp_path):
    model = tiny_model("transformer")
    assert writing_modules(model) == []
    r = memory_probe(model, STREAM, TB, 16, windows=2, multiples=(1, 2))
    for entry in r["windows"].values():
        assert entry["ablation"] == 0.0 and entry["ablation_se"] == 0.0
    assert [line.split(":")[0] for line in summary_lines(r)] == ["windows of 16", "windows of 32"]
    plot_memory_probe(r, str(tmp_path / "probe.png"))
    assert (tmp_path / "probe.png").stat().st_size > 1000
    json.dumps(r)


def test_memory_model_writes_change_the_loss_and_flags_are_restored():
    model = tiny_model("hope", d_model=16)
    modules = writing_modules(model)
    assert modules and all(m.memory_writes for m in modules)
    r = memory_probe(model, STREAM, TB, 16, windows=2, multiples=(1,))
    entry = r["windows"]["16"]
    assert np.isfinite(entry["on"]["bpb"]) and np.isfinite(entry["off"]["bpb"])
    assert abs(entry["ablation"]) > 1e-6 and 0 < entry["ablation_se"] < np.inf
    assert all(m.memory_writes for m in modules)
    with memory_writes(model, False):
        assert not any(m.memory_writes for m in modules)
    assert all(m.memory_writes for m in modules)
