"""The loop on the tiny Hope model: multi-frequency CMS levels through `train()` on a sharded
mesh, and the per-memory-layer TensorBoard statistics."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hope_jax.train.build import build_trainer
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.loop import train
from hope_jax.train.mesh import build_mesh

from .helpers import read_scalars, tiny_config


@pytest.mark.slow
def test_hope_loop_multi_frequency_and_memory_stats(tmp_path):
    """On mesh data=2, fsdp=2, tensor=2: the period-1 CMS level moves every step, the period-2
    level only on even steps, the period-8 level not at all in 4 steps; TensorBoard holds a
    norm per CMS level and per mixer memory."""
    config = tiny_config(str(tmp_path), arch="hope", steps=4, checkpoint_every=1,
                         keep_checkpoints=5)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.model.num_blocks = 1  # a shorter compile; every CMS level is still there
    config.optim.warmup_steps = 0
    workdir = str(tmp_path / "wd")
    result = train(config, workdir)
    assert result["step"] == 4 and np.isfinite(result["loss"]) and np.isfinite(result["bpb"])

    tr = build_trainer(config, 260, build_mesh(config.mesh), pad_id=0)
    ck = Checkpointer(workdir)
    p = {s: {k: np.asarray(v) for k, v in ck.restore_params(s, tr.abstract_state.params).items()}
         for s in (1, 2, 3, 4)}
    ck.close()
    moved = lambda name, a, b: not np.array_equal(p[a][name], p[b][name])
    lvl = "blocks/0/mlp/levels/{}/w_up/kernel"
    assert tr.periods[lvl.format(1)] == 2 and tr.periods[lvl.format(2)] == 8
    assert all(moved("blocks/0/mlp/levels/0/w_target", s, s + 1) for s in (1, 2, 3))
    assert moved(lvl.format(1), 1, 2) and moved(lvl.format(1), 3, 4)
    assert not moved(lvl.format(1), 2, 3)
    assert not any(moved(lvl.format(2), s, s + 1) for s in (1, 2, 3))

    tb = read_scalars(os.path.join(workdir, "tb"))
    for tag in ("memory/block0/cms_level0_norm", "memory/block0/cms_level2_norm",
                "memory/block0/memory_init_norm"):
        assert tag in tb and np.isfinite(tb[tag][4]) and tb[tag][4] > 0, tag
