"""Zero-shot scoring: a model that knows the answers picks them; a continuation's log-likelihood
equals a direct sum of log-softmax values; formats are detected from keys."""
import os

import numpy as np
import pytest
from flax import nnx

from hope_jax.eval import evaluate_jsonl, load_jsonl, score_continuations
from hope_jax.eval.zero_shot import detect_format
from eval_helpers import tiny_model
from eval_oracles import KGramOracle

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval")


def _path(name):
    return os.path.join(FIXTURES, name)


def _correct_sequences(tok, name):
    """BOS + the text the right answer makes, as the scorer tokenizes it."""
    seqs = []
    for e in load_jsonl(_path(name)):
        if "text" in e:
            text = e["text"]
        elif "endings" in e:
            text = e["ctx"] + " " + e["endings"][e["label"]]
        else:
            text = e["goal"] + " " + (e["sol1"] if e["label"] == 0 else e["sol2"])
        seqs.append(np.concatenate([[tok.bos_id], tok.encode(text)]))
    return seqs


@pytest.mark.parametrize("name, fmt", [("lambada.jsonl", "lambada"),
                                       ("hellaswag.jsonl", "hellaswag"),
                                       ("piqa.jsonl", "piqa")])
def test_scorer_picks_the_forced_answer(tok, name, fmt):
    oracle = KGramOracle(_correct_sequences(tok, name), tok.vocab_size)
    out = evaluate_jsonl(oracle, tok, _path(name), batch_size=4)
    assert out["format"] == fmt and out["n"] == len(load_jsonl(_path(name)))
    assert out["acc"] == 1.0
    if fmt != "lambada":
        assert out["acc_norm"] == 1.0
    else:
        assert out["ppl_token"] < 1.01   # the oracle puts ≈ all its mass on each token
        assert 1.0 < out["ppl"] < 1.1      # per word: the product over the word's tokens


def test_wrong_labels_give_zero_accuracy(tok, tmp_path):
    """Flipping PIQA labels with the same oracle scores 0: the scorer follows the labels."""
    rows = load_jsonl(_path("piqa.jsonl"))
    oracle = KGramOracle(_correct_sequences(tok, "piqa.jsonl"), tok.vocab_size)
    flipped = tmp_path / "piqa_flipped.jsonl"
    import json
    flipped.write_text("".join(json.dumps(dict(r, label=1 - r["label"])) + "\n" for r in rows))
    assert evaluate_jsonl(oracle, tok, str(flipped))["acc"] == 0.0


def test_detect_format():
    assert detect_format({"text": "a b"}) == "lambada"
    assert detect_format({"ctx": "", "endings": [], "label": 0}) == "hellaswag"
    assert detect_format({"goal": "", "sol1": "", "sol2": "", "label": 0}) == "piqa"
    with pytest.raises(ValueError, match="unknown zero-shot format"):
        detect_format({"question": "?"})


def test_loglik_equals_direct_log_softmax_sum(tok):
    model = tiny_model("transformer")
    pairs = [("The cat sat on the", " mat"), ("Hi", " there, friend"), ("x" * 40, " y")]
    logp, greedy, n = score_continuations(model, tok, pairs, batch_size=2)
    forward = nnx.jit(lambda m, x: m(x))  # one compile per length, not one per op
    for (ctx, cont), lp, g, k in zip(pairs, logp, greedy, n):
        seq = np.concatenate([[tok.bos_id], tok.encode(ctx), tok.encode(cont)]).astype(np.int32)
        logits = np.asarray(forward(model, seq[None, :-1])[0], np.float64)  # unpadded, one row
        ls = logits - logits.max(-1, keepdims=True)
        ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
        k_cont = len(tok.encode(cont))
        direct = sum(ls[t, seq[t + 1]] for t in range(len(seq) - 1 - k_cont, len(seq) - 1))
        assert k == k_cont
        np.testing.assert_allclose(lp, direct, rtol=1e-4, atol=1e-4)
        span = range(len(seq) - 1 - k_cont, len(seq) - 1)
        assert bool(g) == all(np.argmax(logits[t]) == seq[t + 1] for t in span)
    assert logp.shape == greedy.shape == (len(pairs),)
