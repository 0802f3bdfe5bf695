"""The step loop reads metrics one step late (docs/training.md, "Metrics one step late").

Step N+1 is dispatched before step N's metrics reach the host; steps whose hooks need the state
(logging, evaluation, checkpoints, the first and the last) are read at once. Nothing may be lost
or reordered by the lag: every step's loss, the NaN policy's warnings and its stop.
"""
from __future__ import annotations

import json
import os
import warnings

import pytest

from hope_jax.train import loop
from hope_jax.train.loop import NonFiniteTrainingError, train

from .helpers import tiny_config


def _loss_rows(workdir: str) -> list[tuple[int, float, bool]]:
    """(step, loss, full row) for every metrics.jsonl row with a loss, in file order."""
    out = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                out.append((r["step"], r["loss"], "tokens_per_s" in r))
    return out


def _record_order(monkeypatch) -> list[str]:
    """Records "d<N>" when step N is dispatched and "r<N>" when its metrics are read."""
    events: list[str] = []
    dispatch, hooks = loop._Run._dispatch_step, loop._Run._per_step_hooks

    def traced_dispatch(self):
        out = dispatch(self)
        events.append(f"d{self.step}")
        return out

    def traced_hooks(self, step, metrics):
        events.append(f"r{step}")
        return hooks(self, step, metrics)

    monkeypatch.setattr(loop._Run, "_dispatch_step", traced_dispatch)
    monkeypatch.setattr(loop._Run, "_per_step_hooks", traced_hooks)
    return events


def test_lagged_metrics_lose_nothing_and_keep_the_nan_policy(tmp_path, monkeypatch):
    """log_every = 3 over 7 steps (steps 2, 4, 5 read late) gives the same losses, in order, as
    reading every step at once; a NaN at a late-read step warns with its own step number; two
    consecutive NaN steps stop with max_bad_steps = 2, naming the step that ended them."""
    runs = {}
    events = _record_order(monkeypatch)
    for every in (1, 3):
        events.clear()
        config = tiny_config(str(tmp_path), steps=7, log_every=every, poison_steps=(2,))
        workdir = str(tmp_path / f"every{every}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train(config, workdir)
        assert result["stopped"] == "done"
        assert [str(w.message) for w in caught if "non-finite" in str(w.message)] == [
            "step 2: non-finite loss/gradient (loss=nan, grad_norm=nan); update skipped "
            "(1/5 consecutive)"]
        runs[every] = _loss_rows(workdir)
    # the lag itself: steps 2, 4 and 5 are read after the next step is dispatched
    assert events == ["d1", "r1", "d2", "d3", "r2", "r3", "d4", "d5", "r4", "d6", "r5", "r6",
                      "d7", "r7"], events
    assert [s for s, _, _ in runs[3]] == list(range(1, 8))
    assert [l for _, l, _ in runs[3]][2:] == [l for _, l, _ in runs[1]][2:]  # NaN ≠ NaN at 2
    assert [s for s, _, full in runs[3] if full] == [3, 6, 7]

    bad = tiny_config(str(tmp_path), steps=8, log_every=4, poison_steps=(2, 3),
                      max_bad_steps=2)
    with pytest.raises(NonFiniteTrainingError, match=r"2 consecutive non-finite steps \(ending "
                                                     r"at step 3\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(bad, str(tmp_path / "bad"))
