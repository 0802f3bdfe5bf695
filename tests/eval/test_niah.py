"""NIAH: the generator places the needle at the requested depth, prompts are exact-length and
seeded; the scorer counts an exact greedy answer (checked with an oracle that emits it)."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax.eval import make_niah_example, niah_accuracy, niah_grid
from hope_jax.eval.niah import NOISE, split_sentences
from eval_helpers import tiny_model

ESSAY = ("Rivers carve valleys over many thousands of years. Some of them wander widely across "
         "flat plains! Others cut deep, narrow gorges into hard rock. Why do they differ so much? "
         "The answer lies in the slope, the rock and the climate of each region. ") * 3


@pytest.mark.parametrize("task, haystack", [("passkey", None), ("number", ESSAY),
                                            ("uuid", ESSAY)])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.75, 1.0])
def test_needle_sits_at_requested_depth(tok, task, haystack, depth):
    length = 600
    ex = make_niah_example(tok, length, depth, task, np.random.default_rng(1), haystack)
    assert ex.tokens.shape == (length,) and ex.tokens.dtype == np.int32
    text = tok.decode(ex.tokens)
    needle_text = f"One of the special magic {'uuid' if task == 'uuid' else 'number'}s for {ex.key}"
    assert text.count(ex.value) == 1 and needle_text in text
    # the needle's first token is where the generator says it is (byte tokenizer: one per byte)
    assert tok.decode(ex.tokens[ex.needle_pos:]).lstrip().startswith(needle_text)
    longest = max(len(tok.encode(" " + s)) for s in split_sentences(haystack or NOISE))
    hay_len = ex.context_len - len(tok.encode(f" {needle_text} is: {ex.value}."))
    assert abs((ex.needle_pos - ex.context_start) - depth * hay_len) <= longest
    assert text.rstrip().endswith(f"The special magic {'uuid' if task == 'uuid' else 'number'} "
                                  f"for {ex.key} is")
    assert {"passkey": 5, "number": 7, "uuid": 36}[task] == len(ex.value)


def test_generator_is_deterministic_for_a_seed(tok):
    a = make_niah_example(tok, 400, 0.5, "number", np.random.default_rng(7), ESSAY)
    b = make_niah_example(tok, 400, 0.5, "number", np.random.default_rng(7), ESSAY)
    c = make_niah_example(tok, 400, 0.5, "number", np.random.default_rng(8), ESSAY)
    assert np.array_equal(a.tokens, b.tokens) and a.value == b.value
    assert not np.array_equal(a.tokens, c.tokens)


def test_too_short_length_is_rejected(tok):
    with pytest.raises(ValueError, match="too short"):
        make_niah_example(tok, 100, 0.5)


class _Answerer(nnx.Module):
    """A recurrent stand-in: prefill/step emit the bytes of `answer` one per step."""

    def __init__(self, answer: np.ndarray, vocab: int = 260):
        self.answer = nnx.Variable(jnp.asarray(answer, jnp.int32))
        self.vocab = vocab

    def _logits(self, i, b):
        tok = self.answer[...][jnp.minimum(i, self.answer.shape[0] - 1)]
        return jnp.broadcast_to(jnp.eye(self.vocab)[tok], (b, self.vocab))

    def prefill(self, tokens, max_len=None):
        b, t = tokens.shape
        logits = jnp.zeros((b, t, self.vocab)).at[:, -1].set(self._logits(0, b))
        return logits, jnp.int32(1)

    def step(self, token, i):
        return self._logits(i, token.shape[0]), i + 1


def test_scorer_counts_exact_answers(tok):
    ex = make_niah_example(tok, 400, 0.5, "uuid", np.random.default_rng(3))
    right = _Answerer(tok.encode(f" {ex.value}.\n"))
    wrong = _Answerer(tok.encode(f" {ex.value[:-1]}x.\n"))
    longer = _Answerer(tok.encode(f" {ex.value}7\n"))
    assert niah_accuracy(right, tok, [ex]) == 1.0
    assert niah_accuracy(wrong, tok, [ex]) == 0.0
    assert niah_accuracy(longer, tok, [ex]) == 0.0


def test_grid_shape_and_determinism_on_tiny_model(tok):
    model = tiny_model("transformer")
    kw = dict(lengths=[400, 480], depths=[0.0, 0.5, 1.0], task="passkey", n_samples=2, seed=0)
    a = niah_grid(model, tok, **kw)
    b = niah_grid(model, tok, **kw)
    assert a.shape == (2, 3) and np.array_equal(a, b)
    assert ((a >= 0) & (a <= 1)).all()
