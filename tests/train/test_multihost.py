"""Two local processes joined by `jax.distributed` train exactly like one process with the same
8 devices: same global batches (each process reads its slice), same losses, and asynchronous
checkpoints at every step that never deadlock with the steps' collectives."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.loop import config_from_dict, train
from tests.train.helpers import tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _losses(workdir: str) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    config = tiny_config(str(tmp_path), arch="transformer", steps=4)
    config.mesh.data, config.mesh.fsdp = 4, 2            # both axes cross the two processes
    config.train.checkpoint_every = 1    # asynchronous saves overlap the next steps' collectives
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(config.to_dict()))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)

    multi, port = tmp_path / "multi", _free_port()
    logs = [(open(tmp_path / f"p{i}.out", "w+"), open(tmp_path / f"p{i}.err", "w+"))
            for i in range(2)]                      # files, not pipes: nobody reads them yet
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "run_multihost.py"), str(i),
                               str(port), str(cfg_path), str(multi)], env=env,
                              stdout=logs[i][0], stderr=logs[i][1], text=True)
             for i in range(2)]
    try:
        # the reference, while the two processes start: one process with the same 8 devices
        # (this one, tests/conftest.py)
        single = tmp_path / "single"
        train(config_from_dict(json.loads(cfg_path.read_text())), str(single))
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = []
    for out, err in logs:
        out.seek(0), err.seek(0)
        outs.append((out.read(), err.read()))
        out.close(), err.close()
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    results = [json.loads(o.split(f"RESULT {i} ", 1)[1]) for i, (o, _) in enumerate(outs)]
    assert results[0]["step"] == results[1]["step"] == 4
    np.testing.assert_allclose(_losses(str(multi)), _losses(str(single)), rtol=1e-5, atol=1e-6)
    assert len(_losses(str(single))) == 4
    # the saves were asynchronous on both processes, and every step was committed
    assert results[0]["async_checkpoints"] is True and results[1]["async_checkpoints"] is True
    ckpt = Checkpointer(str(multi))
    assert ckpt.steps() == [4, 3, 2]                # keep_checkpoints = 3
    _, data_states, _ = ckpt.read_json(4)            # both processes' data-iterator states
    assert len(data_states["processes"]) == 2
    ckpt.close()
