"""Sampling: logit filters against their definitions; decoding with the recurrent state equals
re-running the full forward on the growing sequence."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax.models import Decoder, get_config
from hope_jax.sampling import filter_logits, generate


@pytest.mark.fast
def test_top_k_and_greedy_keep_the_right_tokens():
    logits = jax.random.normal(jax.random.PRNGKey(0), (3, 50))
    kept = np.isfinite(np.asarray(filter_logits(logits, 1.0, top_k=5)))
    assert (kept.sum(-1) == 5).all()
    top5 = np.argsort(-np.asarray(logits), -1)[:, :5]
    assert all(set(np.flatnonzero(kept[i])) == set(top5[i]) for i in range(3))
    greedy = np.isfinite(np.asarray(filter_logits(logits, 0.0)))
    assert (np.flatnonzero(greedy[1]) == [int(np.argmax(logits[1]))]).all()


@pytest.mark.fast
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1.0])
def test_top_p_keeps_the_smallest_nucleus(p):
    logits = jax.random.normal(jax.random.PRNGKey(1), (4, 37)) * 2
    kept = np.isfinite(np.asarray(filter_logits(logits, 0.7, top_p=p)))
    probs = np.asarray(jax.nn.softmax(logits / 0.7, -1))
    for i in range(4):
        order = np.argsort(-probs[i])
        cum = np.cumsum(probs[i][order])
        n = int(np.searchsorted(cum, p - 1e-7)) + 1 if p < 1 else 37   # first prefix reaching p
        assert set(np.flatnonzero(kept[i])) == set(order[:min(n, 37)])


# One recurrent arch: generate's compiled scan of Decoder.step is arch-independent, and
# prefill + steps == forward is tested for every mixer kind in tests/models/test_decoding.py.
@pytest.mark.parametrize("arch", ["gated_deltanet"])
def test_greedy_generation_equals_full_forward_argmax(arch):
    """Greedy tokens are the argmax of the full forward at every position: the model is causal,
    so one forward over prompt + generated tokens gives each step's logits given its prefix (one
    compile instead of one per length)."""
    model = Decoder(get_config(arch, "tiny", num_blocks=1, d_model=32), rngs=nnx.Rngs(3))
    prompt = jax.random.randint(jax.random.PRNGKey(2), (2, 7), 0, 260)
    out = generate(model, prompt, 9, jax.random.PRNGKey(0), temperature=0.0)
    logits = model(jnp.concatenate([prompt, out], 1))
    want = jnp.argmax(logits[:, 6:15], -1)  # position 6 + i predicts generated token i
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want))


def test_sampling_is_seeded_and_respects_top_k():
    model = Decoder(get_config("transformer", "tiny", num_blocks=1, d_model=32),
                    rngs=nnx.Rngs(0))
    prompt = jnp.ones((3, 4), jnp.int32)
    a = generate(model, prompt, 12, jax.random.PRNGKey(5), temperature=1.0, top_k=3)
    b = generate(model, prompt, 12, jax.random.PRNGKey(5), temperature=1.0, top_k=3)
    c = generate(model, prompt, 12, jax.random.PRNGKey(6), temperature=1.0, top_k=3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    with pytest.raises(ValueError, match=r"prompt token ids must lie in \[0, 260\)"):
        generate(model, prompt + 300, 2, jax.random.PRNGKey(0))
