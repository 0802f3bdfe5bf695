"""Continual learning: the phase × domain matrix, forgetting on a constructed case, and the
default runner's orchestration (with stand-in trainer and data packages)."""
import types

import numpy as np
import pytest

import hope_jax
from hope_jax.config.defaults import default_config
from hope_jax.eval import continual_learning, forgetting, run_continual
from oracles import Bigram

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
    def token_bytes(self):
        return np.asarray([1] * 256 + [0] * 4)


def _fake_packages(monkeypatch, with_init_from: bool):
    log = []

    def train(config, workdir, init_from=None):
        log.append((config.data.corpus, config.train.steps, workdir, init_from))

    def train_no_init(config, workdir):
        log.append((config.data.corpus, config.train.steps, workdir, None))

    rng = np.random.default_rng(0)
    fake_train = types.SimpleNamespace(
        train=train if with_init_from else train_no_init,
        load_for_inference=lambda wd: (Bigram(np.full((260, 260), float(len(log)))), _Tok(), None))
    fake_data = types.SimpleNamespace(
        prepare=lambda cfg: types.SimpleNamespace(tokenizer=_Tok(), corpus=cfg.corpus),
        eval_batches=lambda prep, split, seq_len, batch_size, max_batches: iter(
            [dict(tokens=rng.integers(0, 256, (2, seq_len + 1)).astype(np.int32),
                  mask=np.ones((2, seq_len), np.float32))]))
    monkeypatch.setattr(hope_jax, "train", fake_train, raising=False)
    monkeypatch.setattr(hope_jax, "data", fake_data, raising=False)
    return log


@pytest.mark.parametrize("with_init_from", [True, False])
def test_default_runner_chains_phases(monkeypatch, tmp_path, with_init_from):
    log = _fake_packages(monkeypatch, with_init_from)
    cfg = default_config()
    cfg.data.seq_len = 8
    out = continual_learning(cfg, str(tmp_path), steps_per_phase=5, eval_batches=1)
    assert [r[0] for r in log] == ["en_pip", "python_stdlib", "japanese"]
    if with_init_from:
        assert [r[1] for r in log] == [5, 5, 5]
        assert log[0][3] is None and log[1][3] == log[0][2] and log[2][3] == log[1][2]
    else:   # one workdir, resumed, cumulative steps
        assert [r[1] for r in log] == [5, 10, 15] and len({r[2] for r in log}) == 1
    assert out["bpb"].shape == (3, 3) and np.isfinite(np.tril(out["bpb"])).all()
    assert out["forgetting"][-1] == 0.0 and cfg.data.corpus == "en_pip"  # caller's config intact
