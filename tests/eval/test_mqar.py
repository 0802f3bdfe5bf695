"""MQAR: every query is solvable (its key appeared earlier with one value), batches are seeded,
and the training recipe runs."""
import jax
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


def test_train_mqar_skips_non_finite_steps():
    """A model whose forward is non-finite (Titans memory at η_max = 10⁴) never gets a NaN into
    its parameters: every step is skipped and counted, the parameters stay at their init."""
    from flax import nnx

    from hope_jax.layers import titans_lmm
    from hope_jax.models import Decoder
    cfg = get_config("titans_lmm", "tiny", d_model=32, num_blocks=1, vocab_size=32,
                     mixers=(titans_lmm(2, chunk_size=8, eta_max=1e4, v_l2=False,
                                                normalize=False, momentum_dampening=False),))
    model, hist = train_mqar(cfg, steps=3, batch_size=4, seq_len=32, num_kv_pairs=4,
                             eval_batches=1)
    assert hist["skipped_steps"] == 3 and not np.isfinite(hist["losses"]).any()
    init = nnx.state(Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(init)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
