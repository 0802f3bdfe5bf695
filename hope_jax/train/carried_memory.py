"""Carried-memory training: some rows start from a memory that has already read other text.

D33 restarts every inner state from its learned initial value at the start of each training
sequence, so a model trained that way has only ever begun a sequence from that initial value. At
test time a memory is often carried from one document into the next (the memorisation probe,
`hope-jax learn`, a long-running server): the next document then starts from a memory full of
unrelated text, a state the model never trained on, and carrying it costs bits per byte.

With `train.carried_memory = f > 0` the last ⌊f · B⌋ rows of each (micro-)batch start from a
carried memory instead (docs/training.md, "Carried-memory training"):

    s_b = reset_context(stop_gradient(state after reading the window of row b − B + k), s_0)

that is, the memory left after reading another row's window (unrelated text of the same
stream) with its context (KV caches, convolution buffers) restarted; the other B − k rows start
fresh, as in D33. The prefix pass is forward-only (no gradient flows into it, as no gradient flows
across documents at test time); it costs about one extra forward of k rows. Held-out evaluation is
unchanged: every window starts fresh.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.core.fresh_form import fresh_form_like
from hope_jax.models.context_state import reset_context
from hope_jax.train.state import Params
from hope_jax.train.step import NllFn, hidden_nll

Array = jax.Array


def carried_rows(batch: int, fraction: float) -> int:
    """How many of `batch` rows start from a carried memory: ⌊fraction · batch⌋, at most half (each
    carried row reads a fresh row's window first)."""
    return min(int(fraction * batch), batch // 2)


def carried_memory_nll(model_of: Callable[[Params], nnx.Module], fraction: float,
                       loss_chunk: int = 0) -> NllFn:
    """(params, tokens [B, T+1]) → NLL [B, T]: rows B−k … B−1 start from the memory left by
    reading rows 0 … k−1 (k = `carried_rows(B, fraction)`), the rest from the fresh state.

    model_of: params → the Decoder (`nnx.merge`). loss_chunk > 0 scores the output head that
    many positions at a time (`hidden_nll`)."""

    def nll(params: Params, tokens: Array) -> Array:
        model = model_of(params)
        b, t1 = tokens.shape
        k = carried_rows(b, fraction)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if k == 0:
            return hidden_nll(model, model.hidden(inputs), targets, loss_chunk)
        fresh = model.init_state(k, t1 - 1)
        _, read = model.forward_hidden(inputs[:k], fresh)          # the prefix pass
        start = reset_context(jax.lax.stop_gradient(read), fresh)
        if model.starts_document_at(t1 - 1):  # whole chunks: the new text takes the
            start = fresh_form_like(start, fresh)  # fresh-sequence path (MAC: new segments)
        h_fresh = model.hidden(inputs[: b - k])
        h_carried, _ = model.forward_hidden(inputs[b - k:], start)
        return jnp.concatenate([hidden_nll(model, h_fresh, targets[: b - k], loss_chunk),
                                hidden_nll(model, h_carried, targets[b - k:], loss_chunk)],
                               axis=0)

    return nll


__all__ = ["carried_memory_nll", "carried_rows"]
