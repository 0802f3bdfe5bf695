"""Continual learning: the phase × domain matrix, forgetting on a constructed case, and the
default runner's orchestration (with stand-in trainer and data packages)."""
import types

import numpy as np
import pytest

import hope_jax
from hope_jax.config.defaults import default_config
from hope_jax.eval import continual_learning, forgetting, run_continual
from eval_oracles import Bigram

PHASES = ["en_pip", "python_stdlib", "japanese"]   # the default phases; domain p is text "a" + p
M = np.array([[1.0, np.nan, np.nan],
              [1.5, 2.0, np.nan],
              [1.8, 2.2, 1.2]])


@pytest.mark.fast
def test_forgetting_on_a_constructed_matrix():
    np.testing.assert_allclose(forgetting(M), [0.8, 0.2, 0.0])
    best = M.copy()
    best[1, 0] = 0.9   # domain 0 got better during phase 1 before being forgotten
    np.testing.assert_allclose(forgetting(best, "best"), [0.9, 0.2, 0.0])
    np.testing.assert_allclose(forgetting(best, "own"), [0.8, 0.2, 0.0])
    with pytest.raises(ValueError):
        forgetting(M[:2])


def test_run_continual_fills_the_lower_triangle_in_order():
    calls = []
    quality = {}

    def train_fn(p, domain):
        calls.append(("train", p, domain))
        quality[domain] = 1.0
        for d in quality:
            quality[d] += 0.5 if d != domain else 0.0   # older domains degrade

    def eval_fn(domain):
        calls.append(("eval", domain))
        return quality.get(domain, 9.0)

    m = run_continual(train_fn, eval_fn, ["a", "b", "c"])
    assert calls[:3] == [("train", 0, "a"), ("eval", "a"), ("train", 1, "b")]
    assert np.isnan(m[0, 1]) and np.isnan(m[1, 2]) and not np.isnan(np.tril(m)).any()
    np.testing.assert_allclose(forgetting(m), [1.0, 0.5, 0.0])
    full = run_continual(train_fn, eval_fn, ["a", "b", "c"], eval_unseen=True)
    assert not np.isnan(full).any()


class _Tok:
    vocab_size = 260

    def token_bytes(self):
        return np.asarray([1] * 256 + [0] * 4)


def _fake_packages(monkeypatch, with_init_from: bool):
    log = []

    def train(config, workdir, init_from=None):
        log.append((config.data.corpus, config.train.steps, workdir, init_from))

    def train_no_init(config, workdir):
        log.append((config.data.corpus, config.train.steps, workdir, None))

    fake_train = types.SimpleNamespace(
        train=train if with_init_from else train_no_init,
        load_for_inference=lambda wd: (Bigram(np.full((260, 260), float(len(log)))), _Tok(), None))
    fake_data = types.SimpleNamespace(
        prepare=lambda cfg: types.SimpleNamespace(tokenizer=_Tok(), corpus=cfg.corpus),
        eval_batches=lambda prep, split, seq_len, batch_size, max_batches: iter(
            [dict(tokens=np.full((2, seq_len + 1), ord("a") + PHASES.index(prep.corpus),
                                 np.int32), mask=np.ones((2, seq_len), np.float32))]),
        train_iterator=lambda prep, seq_len, batch_size, seed: iter(
            dict(tokens=np.full((batch_size, seq_len + 1), ord("a") + seed, np.int32))
            for _ in range(10 ** 6)))
    monkeypatch.setattr(hope_jax, "train", fake_train, raising=False)
    monkeypatch.setattr(hope_jax, "data", fake_data, raising=False)
    return log


@pytest.mark.parametrize("with_init_from", [True, False])
def test_default_runner_chains_phases(monkeypatch, tmp_path, with_init_from):
    log = _fake_packages(monkeypatch, with_init_from)
    cfg = default_config()
    cfg.data.seq_len = 8
    cfg.model.arch = "transformer"
    cfg.train.global_batch = 2
    cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 1
    out = continual_learning(cfg, str(tmp_path), steps_per_phase=5, eval_batches=1)
    if with_init_from:
        assert [r[0] for r in log] == ["en_pip", "python_stdlib", "japanese"]
        assert [r[1] for r in log] == [5, 5, 5]
        assert log[0][3] is None and log[1][3] == log[0][2] and log[2][3] == log[1][2]
    else:   # the trainer cannot start from other params: one model trained in-process
        assert log == [] and out["workdirs"] == []
        assert [len(x) for x in out["losses"]] == [5, 5, 5]
        # each phase's text is learnt ("a…", then "b…", then "c…"), then partly forgotten
        assert all(x[-1] < x[0] for x in out["losses"])
        assert out["forgetting"][0] > 0.5   # "a" learnt in phase 0, lost after "b" and "c"
    assert out["bpb"].shape == (3, 3) and np.isfinite(np.tril(out["bpb"])).all()
    assert out["forgetting"][-1] == 0.0 and cfg.data.corpus == "en_pip"  # caller's config intact
