"""Tests of hope_jax/train/checkpoint.py and the loop's checkpoint behaviour: exact resume after
the process ends, SIGTERM, damaged checkpoints, incompatible workdirs, the NaN policy."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from flax import nnx

from hope_jax.train.checkpoint import Checkpointer, IncompatibleCheckpointError, config_to_json
from hope_jax.train.loop import NonFiniteTrainingError, load_for_inference, train
from hope_jax.train.state import ParamCodec, all_finite

from .helpers import read_scalars, tiny_config

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_train.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spawn(config, workdir: str) -> subprocess.Popen:
    path = os.path.join(workdir + "-config.json")
    with open(path, "w") as f:
        json.dump(config_to_json(config), f)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, RUNNER, path, workdir], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _metrics(workdir: str) -> dict[int, dict]:
    rows = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                rows[r["step"]] = r
    return rows


def _params(workdir: str) -> dict[str, np.ndarray]:
    model, _, _ = load_for_inference(workdir)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    return {k: np.asarray(v) for k, v in ParamCodec(params).to_flat(params).items()}


def test_exact_resume_after_the_process_ends(tmp_path):
    """6 steps straight == 3 steps in a process that then exits + 3 resumed steps: identical
    losses and parameters bit for bit (params, Adam state, step and data-iterator state are
    restored)."""
    config = tiny_config(str(tmp_path), steps=6)
    straight = str(tmp_path / "straight")
    train(config, straight)

    resumed = str(tmp_path / "resumed")
    first = config.copy_and_resolve_references()
    first.train.stop_at = 3
    proc = _spawn(first, resumed)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert '"stopped": "stop_at"' in out and Checkpointer(resumed).steps() == [3]
    result = train(config, resumed)
    assert result["step"] == 6 and result["stopped"] == "done"

    a, b = _metrics(straight), _metrics(resumed)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for s in range(1, 7):
        assert a[s]["loss"] == b[s]["loss"], (s, a[s]["loss"], b[s]["loss"])
    pa, pb = _params(straight), _params(resumed)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_sigterm_checkpoints_and_exits_zero(tmp_path):
    """SIGTERM mid-run: the step finishes, a loadable checkpoint of that step is written, and
    the process exits with status 0."""
    config = tiny_config(str(tmp_path), steps=100_000)
    workdir = str(tmp_path / "wd")
    proc = _spawn(config, workdir)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= 3:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert '"stopped": "sigterm"' in out
    last = max(_metrics(workdir))
    assert Checkpointer(workdir).steps()[0] == last >= 3
    params = _params(workdir)
    assert all(np.isfinite(v).all() for v in params.values())


def _damage_step(ckpt_dir: str, step: int) -> None:
    """Deletes the array data files of `step`'s params (as a crash or a bad disk might)."""
    removed = 0
    for root, _, files in os.walk(os.path.join(ckpt_dir, str(step), "params")):
        for f in files:
            if "manifest" in f or root.endswith("/d") or f.startswith("_"):
                os.remove(os.path.join(root, f))
                removed += 1
    assert removed


def test_damaged_or_uncommitted_checkpoint_is_not_loaded(tmp_path, caplog):
    """A step with deleted files falls back to the previous complete step (with a warning, the
    damaged step moved aside to `<step>.corrupt`); an
    uncommitted orbax tmp directory is never listed; if nothing restores, a clear error."""
    config = tiny_config(str(tmp_path), steps=4, checkpoint_every=2)
    workdir = str(tmp_path / "wd")
    train(config, workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    assert Checkpointer(workdir).steps() == [4, 2]
    _damage_step(ckpt_dir, 4)
    os.makedirs(os.path.join(ckpt_dir, "6.orbax-checkpoint-tmp-1234567"))
    with open(os.path.join(ckpt_dir, "6.orbax-checkpoint-tmp-1234567", "junk"), "w") as f:
        f.write("partial")
    ck = Checkpointer(workdir)
    assert ck.steps() == [4, 2]                       # the tmp dir is not a step

    from hope_jax.train.build import build_trainer
    from hope_jax.train.mesh import build_mesh
    tr = build_trainer(config, 260, build_mesh(config.mesh), pad_id=0)
    state, data_states, step = ck.restore(tr.abstract_state, config, 260)
    ck.close()
    assert step == 2 and int(state.step) == 2 and len(data_states) == 1
    assert any("step 4 is damaged" in r.getMessage() for r in caplog.records)
    assert os.path.isdir(os.path.join(ckpt_dir, "4.corrupt"))   # moved aside, never deleted

    _damage_step(ckpt_dir, 2)                         # nothing readable left
    ck = Checkpointer(workdir)
    with pytest.raises(RuntimeError, match="could be restored"):
        ck.restore(tr.abstract_state, config, 260)
    ck.close()


def test_incompatible_workdir_is_refused(tmp_path):
    """Resuming a workdir with another model/data shape names the differing keys."""
    config = tiny_config(str(tmp_path), steps=1)
    workdir = str(tmp_path / "wd")
    train(config, workdir)
    other = config.copy_and_resolve_references()
    other.data.seq_len = 32
    other.model.size = "small"
    with pytest.raises(IncompatibleCheckpointError, match=r"data\.seq_len.*16.*32") as e:
        train(other, workdir)
    assert "model.size" in str(e.value)


def test_a_model_built_differently_today_is_refused(tmp_path, monkeypatch):
    """The checkpoint records the DecoderConfig its config built; if hope_jax now builds the
    same config into another model of the same shapes (a preset default changed), resuming and
    loading for inference both refuse, naming the field."""
    import dataclasses

    from hope_jax.train import model_record

    config = tiny_config(str(tmp_path), steps=1)
    workdir = str(tmp_path / "wd")
    train(config, workdir)
    built = model_record.decoder_config
    monkeypatch.setattr(model_record, "decoder_config",
                        lambda c, v: dataclasses.replace(built(c, v), norm_eps=1e-5))
    message = r"no\s+longer builds.*model\.norm_eps: saved 1e-06, now 1e-05"
    with pytest.raises(IncompatibleCheckpointError, match=message):
        train(config, workdir)
    with pytest.raises(IncompatibleCheckpointError, match=message):
        load_for_inference(workdir)


def test_nan_steps_skipped_never_checkpointed_and_stop(tmp_path):
    """A NaN at one step is skipped (params unchanged), the run continues and no checkpoint
    holds non-finite values; max_bad_steps consecutive NaN steps stop with a clear error."""
    config = tiny_config(str(tmp_path), steps=4, checkpoint_every=1, keep_checkpoints=5,
                         poison_steps=(2,))
    workdir = str(tmp_path / "wd")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, workdir)
    assert result["stopped"] == "done" and np.isfinite(result["loss"])
    assert any("step 2: non-finite" in str(w.message) for w in caught)
    rows = _metrics(workdir)
    assert rows[2]["bad_steps"] == 1 and rows[3]["bad_steps"] == 0
    tb = read_scalars(os.path.join(workdir, "tb"))  # the TensorBoard tags are written
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/mfu",
                "train/bad_steps", "eval/bpb"):
        assert tag in tb, (tag, sorted(tb))
    assert tb["train/bad_steps"][2] == 1.0 and 0 < tb["eval/bpb"][4] < 10
    assert os.path.getsize(os.path.join(workdir, "loss.png")) > 1000
    ck = Checkpointer(workdir)
    assert ck.steps() == [4, 3, 2, 1]
    from hope_jax.train.build import build_trainer
    from hope_jax.train.mesh import build_mesh
    tr = build_trainer(config, 260, build_mesh(config.mesh), pad_id=0)
    saved = {s: ck.restore_params(s, tr.abstract_state.params) for s in ck.steps()}
    for s, p in saved.items():
        assert bool(all_finite(p)), s
    for k in saved[1]:                                # step 2 was skipped: params unchanged
        np.testing.assert_array_equal(np.asarray(saved[2][k]), np.asarray(saved[1][k]))
    ck.close()

    bad = tiny_config(str(tmp_path), steps=8, checkpoint_every=1, poison_steps=(2, 3, 4),
                      max_bad_steps=3)
    bad_dir = str(tmp_path / "bad")
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive non-finite steps"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(bad, bad_dir)
    ck = Checkpointer(bad_dir)
    assert ck.steps() and max(ck.steps()) <= 3
    for s in ck.steps():
        assert bool(all_finite(ck.restore_params(s, tr.abstract_state.params))), s
    ck.close()
