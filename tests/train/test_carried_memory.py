"""Carried-memory training (train/carried_memory.py): fresh rows score as in D33; carried rows
score as the token-by-token decoder does after reading another row and restarting its context;
no gradient flows into the read."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax.layers.titans import MACState
from hope_jax.models import Decoder, get_config, reset_context
from hope_jax.train.carried_memory import carried_memory_nll, carried_rows
from hope_jax.train.step import token_nll

T = 19  # odd, over several memory chunks (4 and 8): the memories pad their last chunk


def _model(arch: str) -> Decoder:
    # Titans MAG: a memory, a sliding-window attention (KV cache) and short convolutions (their
    # buffers), so the context restart is exercised; Hope: every memory level.
    return Decoder(get_config(arch, "tiny", d_model=32, num_blocks=1), rngs=nnx.Rngs(3))


def _tokens(b: int, length: int = T) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (b, length + 1)).astype(np.int32)


def _split(model):
    graphdef, params = nnx.split(model)
    return (lambda p: nnx.merge(graphdef, p)), params


def test_carried_rows():
    assert [carried_rows(b, 0.5) for b in (1, 2, 5, 8)] == [0, 1, 2, 4]
    assert carried_rows(8, 0.25) == 2 and carried_rows(8, 0.0) == 0


def _new_text(cache):
    """A new text restarts Titans MAC's positions at 0 (its memory is carried)."""
    return jax.tree.map(lambda s: s._replace(position=jnp.zeros((), jnp.int32))
                        if isinstance(s, MACState) else s, cache,
                        is_leaf=lambda x: isinstance(x, MACState))


@pytest.mark.parametrize("arch, loss_chunk, length",
                         [("titans_mag", 4, T), ("hope", 0, T), ("hope", 0, 16),
                          ("titans_mac", 0, 16)])
def test_rows_match_the_token_by_token_decoder(arch, loss_chunk, length):
    """(With loss_chunk the output head scores 4 positions at a time: the same numbers. At a
    length of whole chunks, 16, the carried memory continues in fresh form; Titans MAC's carried
    rows then start a new text at position 0, against its token-by-token decoder restarted
    there.)"""
    model = _model(arch)
    model_of, params = _split(model)
    tokens = _tokens(4, length)
    nll = np.asarray(jax.jit(carried_memory_nll(model_of, 0.5, loss_chunk))(params, tokens))
    # fresh rows 0, 1: the training forward from the initial state
    apply = nnx.jit(lambda m, x: m(x))
    fresh = token_nll(apply(model, tokens[:2, :-1]), tokens[:2, 1:])
    np.testing.assert_allclose(nll[:2], fresh, rtol=2e-5, atol=2e-5)
    # carried rows 2, 3: decode row j token by token, restart the context, decode row 2 + j
    step = nnx.jit(lambda m, tok, c: m.step(tok, c))
    for j in range(2):
        start = model.init_state(1, length)
        cache = start
        for t in range(length):
            _, cache = step(model, tokens[j:j + 1, t], cache)
        cache = _new_text(reset_context(cache, start))
        logits = []
        for t in range(length):
            z, cache = step(model, tokens[2 + j:3 + j, t], cache)
            logits.append(z)
        ref = token_nll(jnp.stack(logits, axis=1), tokens[2 + j:3 + j, 1:])[0]
        np.testing.assert_allclose(nll[2 + j], ref, rtol=2e-4, atol=2e-4)
    alone = token_nll(apply(model, tokens[2:, :-1]), tokens[2:, 1:])
    assert not np.allclose(nll[2:], alone, atol=1e-4)    # the carried memory changes the loss


def test_no_gradient_flows_into_the_read():
    """The gradient equals that of the same loss with the read memory held constant (the
    restarted context, e.g. MAG's persistent tokens in the KV cache, still depends on the
    parameters)."""
    model = _model("titans_mag")
    model_of, params = _split(model)
    tokens = jnp.asarray(_tokens(4))
    got = jax.jit(jax.grad(lambda p: carried_memory_nll(model_of, 0.5)(p, tokens).sum()))(params)

    read = nnx.jit(lambda m, x: m.forward_hidden(x, m.init_state(2, T))[1])(model, tokens[:2, :-1])

    def held(p):
        m = model_of(p)
        a = token_nll(m(tokens[:2, :-1]), tokens[:2, 1:]).sum()
        h, _ = m.forward_hidden(tokens[2:, :-1], reset_context(read, m.init_state(2, T)))
        return a + token_nll(m.head(h), tokens[2:, 1:]).sum()

    want = jax.jit(jax.grad(held))(params)   # `read` is a constant here
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
