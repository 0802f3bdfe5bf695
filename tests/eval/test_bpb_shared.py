"""The one bits-per-byte implementation: a scorer that returns only batch sums (the trainer's
sharded eval step) gives the same bpb as per-row sums (hope-jax eval); the 95% interval is the
delta-method interval of the ratio."""
import math

import numpy as np
import pytest

from hope_jax.eval import bits_per_byte
from hope_jax.eval._scoring import score_rows
from hope_jax.data.bpb import bpb_summary, score_bpb
from eval_oracles import Bigram


def _batches(rng, V, sizes=(4, 4, 3)):
    out = []
    for b in sizes:
        out.append(dict(tokens=rng.integers(0, V, (b, 17)).astype(np.int32),
                        mask=(rng.random((b, 16)) < 0.9).astype(np.float32)))
    return out


@pytest.mark.fast
def test_batch_sum_scorer_equals_row_scorer():
    rng = np.random.default_rng(3)
    V = 260
    model = Bigram(rng.normal(0, 2, (V, V)).astype(np.float32))
    token_bytes = np.concatenate([rng.integers(1, 4, 256), np.zeros(4)]).astype(np.int32)
    batches = _batches(rng, V)
    rows = bits_per_byte(model, batches, token_bytes)

    def batch_sum(tokens, mask):   # what the trainer's eval step returns: one Σ nats
        return np.asarray([-float(np.sum(np.asarray(score_rows(model, tokens, mask).logp)))])

    sums = score_bpb(batches, batch_sum, token_bytes, rows=4)
    for k in ("bpb", "nats", "tokens", "bytes", "ppl"):
        np.testing.assert_allclose(sums[k], rows[k], rtol=1e-6)
    assert rows["units"] == 11 and sums["units"] == 3
    assert rows["bpb_ci95"][0] < rows["bpb"] < rows["bpb_ci95"][1]


def test_interval_is_the_delta_method_of_the_ratio():
    rng = np.random.default_rng(0)
    nbytes = rng.integers(50, 80, 40).astype(float)
    nats = nbytes * (1.2 + 0.1 * rng.normal(size=40))
    r = bpb_summary(nats, nbytes, nbytes)
    R = nats.sum() / nbytes.sum()
    se = math.sqrt(40 / 39 * np.sum((nats - R * nbytes) ** 2)) / nbytes.sum() / math.log(2)
    assert r["bpb"] == pytest.approx(R / math.log(2)) and r["bpb_se"] == pytest.approx(se)
    assert r["bpb_ci95"] == pytest.approx([r["bpb"] - 1.96 * se, r["bpb"] + 1.96 * se])
    one = bpb_summary(nats[:1], nbytes[:1], nbytes[:1])
    assert math.isnan(one["bpb_se"])
