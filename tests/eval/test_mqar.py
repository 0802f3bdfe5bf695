"""MQAR: every query is solvable (its key appeared earlier with one value), batches are seeded,
and the training recipe runs."""
import numpy as np
import pytest

from hope_jax.eval import mqar_accuracy, mqar_batch, mqar_batches, train_mqar
from hope_jax.models import get_config
from eval_oracles import Bigram


def test_every_query_is_solvable():
    V, T, N = 64, 63, 6
    batch = mqar_batch(np.random.default_rng(0), 16, T, N, V)
    tokens, mask = batch["tokens"], batch["mask"]
    assert tokens.shape == (16, T + 1) and mask.shape == (16, T)
    assert mask.sum() == 16 * ((T + 1 - 2 * N) // 2)
    for row, m in zip(tokens, mask):
        keys, values = row[0:2 * N:2], row[1:2 * N:2]
        assert len(set(keys.tolist())) == N                       # distinct keys
        assert (keys >= 1).all() and (keys < V // 2).all() and (values >= V // 2).all()
        kv = dict(zip(keys.tolist(), values.tolist()))
        for t in np.flatnonzero(m):
            assert t >= 2 * N and row[t] in kv                    # key seen earlier …
            assert row[t + 1] == kv[row[t]]                       # … target = its one value


def test_batches_are_deterministic_and_a_context_free_model_fails():
    a = list(mqar_batches(3, 4, 31, 4, 64, num_batches=2))
    b = list(mqar_batches(3, 4, 31, 4, 64, num_batches=2))
    assert all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, b))
    assert mqar_accuracy(Bigram(np.zeros((64, 64))), a) <= 0.5   # no context: mostly wrong


def test_too_many_pairs_is_rejected():
    with pytest.raises(ValueError):
        mqar_batch(np.random.default_rng(0), 1, 15, 8, 64)


def test_train_mqar_runs_and_reduces_loss():
    cfg = get_config("transformer", "tiny", d_model=32, num_blocks=1, vocab_size=32)
    model, hist = train_mqar(cfg, steps=30, batch_size=8, seq_len=32, num_kv_pairs=4, lr=1e-2,
                             eval_batches=1)
    assert len(hist["losses"]) == 30 and np.isfinite(hist["losses"]).all()
    assert np.mean(hist["losses"][-5:]) < hist["losses"][0]
    assert 0.0 <= hist["accuracy"] <= 1.0
