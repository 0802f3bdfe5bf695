"""Two local processes joined by `jax.distributed` train exactly like one process with the same
8 devices: same global batches (each process reads its slice), same losses."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

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
    config = tiny_config(str(tmp_path), arch="transformer", steps=3)
    config.mesh.data, config.mesh.fsdp = 4, 2            # both axes cross the two processes
    config.train.checkpoint_every = 3
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(config.to_dict()))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)

    single = tmp_path / "single"
    out = subprocess.run([sys.executable, os.path.join(HERE, "run_train.py"), str(cfg_path),
                          str(single)], env=dict(env, XLA_FLAGS=
                          "--xla_force_host_platform_device_count=8"), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    multi, port = tmp_path / "multi", _free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "run_multihost.py"), str(i),
                               str(port), str(cfg_path), str(multi)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    results = [json.loads(o.split(f"RESULT {i} ", 1)[1]) for i, (o, _) in enumerate(outs)]
    assert results[0]["step"] == results[1]["step"] == 3
    np.testing.assert_allclose(_losses(str(multi)), _losses(str(single)), rtol=1e-5, atol=1e-6)
    assert len(_losses(str(single))) == 3
    # process 0 alone writes the logs; the checkpoint of step 3 holds both data-iterator states
    assert (multi / "checkpoints" / "3").is_dir()
