"""train.init_from: a new run starts from another run's newest parameters with a fresh optimizer."""
from __future__ import annotations

import numpy as np

from hope_jax.train.build import build_trainer
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.loop import _warm_start_params, train
from hope_jax.train.mesh import build_mesh

from .helpers import tiny_config


def test_warm_start_takes_the_other_runs_params(tmp_path):
    config = tiny_config(str(tmp_path), arch="transformer", steps=2, checkpoint_every=2)
    first = str(tmp_path / "first")
    train(config, first)

    tr = build_trainer(config, 260, build_mesh(config.mesh), pad_id=256)
    ck = Checkpointer(first, async_save=False)
    saved = ck.restore_params(2, tr.abstract_state.params)
    ck.close()
    warm = _warm_start_params(first, tr)
    assert set(warm) == set(saved)
    for k in saved:
        np.testing.assert_array_equal(np.asarray(warm[k]), np.asarray(saved[k]))
    state = tr.init_state(warm)
    assert int(state.step) == 0

    config.data.seq_len = 16
    config.train.steps = 1
    result = train(config, str(tmp_path / "second"), init_from=first)
    assert result["step"] == 1 and np.isfinite(result["loss"])
    # a fresh model starts near log(260) ≈ 5.56; the warm-started one has already learned
    fresh = train(config, str(tmp_path / "fresh"))
    assert result["loss"] < fresh["loss"]
