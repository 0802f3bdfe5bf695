"""bits_per_byte equals an independent float64 numpy computation, masks and ragged batches too."""
import math

import numpy as np
import pytest

from hope_jax.eval import bits_per_byte
from eval_oracles import Bigram
from eval_helpers import tiny_model


def _numpy_reference(table, batches, token_bytes):
    nats = n_tok = n_bytes = 0.0
    for b in batches:
        logits = table.astype(np.float64)[b["tokens"][:, :-1]]
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                                  keepdims=True)) \
            - logits.max(-1, keepdims=True)
        tgt = b["tokens"][:, 1:]
        lp = np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
        nats -= (lp * b["mask"]).sum()
        n_tok += b["mask"].sum()
        n_bytes += (token_bytes[tgt] * b["mask"]).sum()
    return nats / math.log(2) / n_bytes, math.exp(nats / n_tok), n_tok, n_bytes


@pytest.mark.fast
def test_bpb_matches_numpy_on_random_logits():
    """Random bigram logits, random masks, a smaller last batch and variable token byte lengths."""
    rng = np.random.default_rng(0)
    V = 260
    table = rng.normal(0, 3, (V, V)).astype(np.float32)
    token_bytes = np.concatenate([rng.integers(1, 4, 256), np.zeros(4)]).astype(np.int32)
    batches = []
    for b in (4, 4, 3):
        tokens = rng.integers(0, V, (b, 17)).astype(np.int32)
        mask = (rng.random((b, 16)) < 0.8).astype(np.float32)
        batches.append(dict(tokens=tokens, mask=mask))
    got = bits_per_byte(Bigram(table), batches, token_bytes)
    bpb, ppl, n_tok, n_bytes = _numpy_reference(table, batches, token_bytes)
    assert got["tokens"] == n_tok and got["bytes"] == n_bytes
    np.testing.assert_allclose(got["bpb"], bpb, rtol=1e-5)
    np.testing.assert_allclose(got["ppl"], ppl, rtol=1e-5)
    np.testing.assert_allclose(got["nats"], bpb * math.log(2) * n_bytes, rtol=1e-5)
    # per_window: one sum per real row (the 11 rows; the last batch's padding row dropped)
    rows = bits_per_byte(Bigram(table), batches, token_bytes, per_window=True)
    assert len(rows["window_nats"]) == len(rows["window_bytes"]) == 11
    np.testing.assert_allclose(sum(rows["window_nats"]), got["nats"], rtol=1e-6)
    assert sum(rows["window_bytes"]) == n_bytes


def test_bpb_uniform_model_is_log2_vocab():
    """A model with constant logits scores log2(V) bits per token; with 1 byte per token, bpb
    too."""
    V = 260
    tokens = np.random.default_rng(1).integers(0, 256, (2, 9)).astype(np.int32)
    out = bits_per_byte(Bigram(np.zeros((V, V))), [dict(tokens=tokens)], np.ones(V))
    np.testing.assert_allclose(out["bpb"], math.log2(V), rtol=1e-6)
    np.testing.assert_allclose(out["ppl"], V, rtol=1e-5)


def test_bpb_on_tiny_decoder_is_finite_and_deterministic():
    model = tiny_model("transformer")
    tokens = np.random.default_rng(2).integers(0, 256, (2, 33)).astype(np.int32)
    tb = np.asarray([1] * 256 + [0] * 4)
    a = bits_per_byte(model, [dict(tokens=tokens)], tb)
    b = bits_per_byte(model, [dict(tokens=tokens)], tb)
    assert a == b and np.isfinite(a["bpb"]) and a["tokens"] == 64


def test_bpb_rejects_fully_masked_batches():
    tokens = np.zeros((1, 5), np.int32)
    with pytest.raises(ValueError, match="no scored tokens"):
        bits_per_byte(Bigram(np.zeros((260, 260))), [dict(tokens=tokens, mask=np.zeros((1, 4)))],
                      np.ones(260))
