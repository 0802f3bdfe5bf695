"""Continual learning after deployment (NL Sec. 7.1): levels that keep learning from the next-token
loss.

A trained decoder reads a token stream in segments of S tokens (S = gcd of the groups' chunks and
of the state-restart periods), carrying its recurrent state across segments (`model.forward(tokens,
cache)`: O(1) memory per token). For every segment j the learner computes, in one backward pass,

    ℓ_j = mean_{b, t ∈ segment j} −log p(x_{t+1} | x_≤t)          (the next-token loss)
    a_g ← a_g + ∇_{θ_g} ℓ_j                                         (every learn group g)

and a group whose chunk C_g ends with segment j takes one step of its own optimizer:

    u, o_g ← tx_g.update(a_g / (C_g / S), o_g, θ_g);  θ_g ← θ_g + u;  a_g ← 0

So with C_g = S this is exactly `value_and_grad` of the chunk's mean next-token loss followed by
an optimizer step. With `memory_gradient="stop"` (the default) the gradient treats the sequence
mixers' memory writes inside the segment as constants (D8's stop-gradient mode); "full"
differentiates through them too (learn/memory_gradient.py; docs/continual.md).

Gradients stop at segment boundaries (the carried state is an input, not differentiated through
earlier segments): that keeps memory O(S), whatever the stream length.

Two kinds of θ_g (`hope_jax.learn.groups`): model parameters (shared by the B streams of the
batch; an outer CMS level, anything selected by name), and the fast weights of an in-context CMS
level, which live in the recurrent state (one copy per stream; the gradient is per stream, i.e.
∇ of that stream's own mean loss, and the step is added after the level's own surrogate write).

The learner state (`LearnerState`) is a pytree: pass it to the next call (streaming), `reset` it
per document (fresh recurrent state, learned parameters kept), or carry it. Every call is one
jitted scan over the segments of a window of W tokens (W a multiple of S).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.core.fresh_form import fresh_form_like
from hope_jax.eval._scoring import target_logprobs
from hope_jax.models.context_state import reset_context
from hope_jax.layers.attention import KVCache
from hope_jax.learn.groups import Group, GroupSpec, resolve_groups
from hope_jax.learn.memory_gradient import with_memory_gradient
from hope_jax.train.state import ParamCodec

Array = jax.Array


class LearnerState(NamedTuple):
    """params: every model parameter (flat {name: array}); opt / acc: per group, the optimizer
    state and the gradient sum since the group's last step; cache: the recurrent state;
    position: tokens streamed per row (int32; chunk ends are multiples of C_g)."""

    params: dict
    opt: tuple
    acc: tuple
    cache: Any
    position: Array


def _has_kv_cache(cache: Any) -> bool:
    return any(isinstance(x, KVCache) for x in
               jax.tree.leaves(cache, is_leaf=lambda x: isinstance(x, KVCache)))


def _get_theta(cache: Any, block: int, level: int) -> Any:
    return cache.blocks[block].mlp[level].theta


def _set_theta(cache: Any, block: int, level: int, theta: Any) -> Any:
    blocks = list(cache.blocks)
    mlp = list(blocks[block].mlp)
    mlp[level] = mlp[level]._replace(theta=theta)
    blocks[block] = blocks[block]._replace(mlp=tuple(mlp))
    return cache._replace(blocks=tuple(blocks))


def _select(flag: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


class Learner:
    """A jitted, batched test-time learner for a trained decoder.

    Args:
      model: an NNX `Decoder` (its parameters are the starting point; the model is not changed).
      groups: `GroupSpec`s (default: every CMS level at its own chunk, Adam, lr 3e-4).
      seq_len: the training context T (default model.config.max_len): outer CMS levels of
        period P have own chunk P · T.
      context_len: restart the context state (KV caches, conv buffers) every this many tokens;
        default T for models with attention (the KV cache holds T tokens), else None (carried).
      memory_len: restart the whole recurrent state every this many tokens (None: carried).
      frozen: score only (no gradient, no update): the same reading as learning rate 0 at the
        cost of a forward pass.
      memory_gradient: "stop" (default): the learn gradient treats the mixers' memory writes as
        constants (backward through their reads only; 2× the learning throughput of "full" on
        the tiny Hope, docs/continual.md); "full": through the writes as well, as in training.
    """

    def __init__(self, model: nnx.Module, groups: Sequence[GroupSpec] | None = None, *,
                 seq_len: int | None = None, context_len: int | None | str = "auto",
                 memory_len: int | None = None, frozen: bool = False,
                 memory_gradient: str = "stop"):
        self.seq_len = int(seq_len or model.config.max_len)
        self.groups: list[Group] = resolve_groups(model, list(groups or [GroupSpec()]),
                                                  self.seq_len)
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self.codec = ParamCodec(params)
        # The graph differentiated by a learn step: the same parameters and forward, with every
        # mixer's memory writes in `memory_gradient` mode (an abstract model: only its graph).
        grad_config = with_memory_gradient(model.config, memory_gradient)
        self.grad_graphdef = self.graphdef if grad_config == model.config else nnx.split(
            nnx.eval_shape(lambda: type(model)(grad_config, rngs=nnx.Rngs(0))),
            nnx.Param, ...)[0]
        self.params = self.codec.to_flat(params)
        probe = model.init_state(1, 1)
        if context_len == "auto":
            context_len = self.seq_len if _has_kv_cache(probe) else None
        self.context_len, self.memory_len = context_len, memory_len
        for what, n in (("context_len", context_len), ("memory_len", memory_len)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ValueError(f"{what} must be a positive int or None, got {n!r}")
        # segment S: every chunk end and every restart falls on a segment boundary
        self.segment = math.gcd(*(g.chunk for g in self.groups),
                                *(n for n in (context_len, memory_len) if n))
        self.frozen = bool(frozen)
        self.slots = int(context_len or model.config.max_len)  # KV-cache slots
        # Segments of whole chunks of every memory level: the state between segments keeps the
        # fresh form (core/fresh_form.py), so each segment runs the levels' fresh-sequence path
        # instead of the streaming one, which pads every call to whole chunks (2× the memory
        # scans' work at 8-token segments).
        self.fresh_form = model.cuts_at(self.segment)
        self._template = probe
        self._jit_learn = jax.jit(self._learn, donate_argnums=())

    # ------------------------------------------------------------------ state
    def model(self, params: dict | None = None, *, graphdef: Any = None) -> nnx.Module:
        """The decoder with `params` (default the starting ones), e.g. `state.params`."""
        params = self.params if params is None else params
        graphdef = self.graphdef if graphdef is None else graphdef
        return nnx.merge(graphdef, self.codec.to_state(params), self.rest)

    def fresh_cache(self, params: dict, batch_size: int) -> Any:
        """A fresh recurrent state whose tree does not change after a forward (in fresh form, or
        with None → 0)."""
        model = self.model(params)
        cache = model.init_state(batch_size, self.slots)
        if self.fresh_form:
            return cache
        after = jax.eval_shape(lambda c: model.forward(
            jnp.zeros((batch_size, self.segment), jnp.int32), c)[1], cache)
        return jax.tree.map(lambda a, c: jnp.zeros(a.shape, a.dtype) if c is None else c,
                            after, cache)

    def _values(self, params: dict, cache: Any) -> tuple:
        return tuple({n: params[n] for n in g.params} if g.params else
                     tuple(_get_theta(cache, b, i) for b, i in g.states) for g in self.groups)

    def _insert(self, values: tuple, params: dict, cache: Any) -> tuple[dict, Any]:
        params = dict(params)
        for g, v in zip(self.groups, values):
            if g.params:
                params.update(v)
            else:
                for (b, i), theta in zip(g.states, v):
                    cache = _set_theta(cache, b, i, theta)
        return params, cache

    def init(self, batch_size: int, params: dict | None = None) -> LearnerState:
        """A fresh learner state for `batch_size` parallel streams."""
        params = dict(self.params if params is None else params)
        cache = self.fresh_cache(params, batch_size)
        values = self._values(params, cache)
        opt = tuple(g.tx.init(v) for g, v in zip(self.groups, values))
        acc = jax.tree.map(jnp.zeros_like, values)
        return LearnerState(params, opt, acc, cache, jnp.zeros((), jnp.int32))

    def reset(self, state: LearnerState) -> LearnerState:
        """A new document: fresh recurrent state (memories, fast weights, context); the learned
        parameters, optimizer states, gradient sums and the position are kept."""
        batch = next(x.shape[0] for x in jax.tree.leaves(state.cache) if x.ndim)
        return state._replace(cache=self.fresh_cache(state.params, batch))

    # ------------------------------------------------------------------ learning
    def learn(self, state: LearnerState, tokens: Array) -> tuple[LearnerState, Array]:
        """Streams tokens [B, W+1] (inputs [:, :-1], targets [:, 1:]; W a multiple of the
        segment) → (new state, per-token NLL [B, W] in nats, each scored before its segment's
        update)."""
        w = tokens.shape[1] - 1
        if w < 1 or w % self.segment:
            raise ValueError(f"learn: {w} tokens per row is not a positive multiple of the "
                             f"segment ({self.segment} tokens)")
        return self._jit_learn(state, jnp.asarray(tokens, jnp.int32))

    def _loss(self, values: tuple, params: dict, cache: Any, inp: Array, tgt: Array,
              graphdef: Any = None):
        """Mean next-token NLL of one segment, with the groups' values put in place."""
        params, cache = self._insert(values, params, cache)
        logits, cache = self.model(params, graphdef=graphdef).forward(inp, cache)
        if self.fresh_form:
            cache = fresh_form_like(cache, self._template)
        nll = -target_logprobs(logits, tgt)
        return nll.mean(), (nll, cache)

    def _restart(self, params: dict, cache: Any, position: Array) -> Any:
        """Context restarts every context_len tokens, the whole state every memory_len."""
        if self.context_len is None and self.memory_len is None:
            return cache
        batch = next(x.shape[0] for x in jax.tree.leaves(cache) if x.ndim)
        fresh = self.fresh_cache(params, batch)
        started = position > 0
        if self.context_len is not None:
            flag = started & (position % self.context_len == 0)
            cache = _select(flag, reset_context(cache, fresh), cache)
        if self.memory_len is not None:
            cache = _select(started & (position % self.memory_len == 0), fresh, cache)
        return cache

    def _step_group(self, group: Group, end: Array, acc: Any, opt: Any, value: Any):
        """At a chunk end: one optimizer step on the chunk's mean gradient; else unchanged."""
        k = group.chunk // self.segment

        def apply(args):
            a, o, v = args
            updates, o = group.tx.update(jax.tree.map(lambda x: x / k, a), o, v)
            v = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), v, updates)
            return v, o, jax.tree.map(jnp.zeros_like, a)

        def keep(args):
            a, o, v = args
            return v, o, a

        return jax.lax.cond(end, apply, keep, (acc, opt, value))

    def _segment(self, carry: tuple, xs: tuple) -> tuple[tuple, Array]:
        params, opt, acc, cache, position = carry
        inp, tgt = xs
        cache = self._restart(params, cache, position)
        values = self._values(params, cache)
        if self.frozen:
            _, (nll, cache) = self._loss(values, params, cache, inp, tgt)
            return (params, opt, acc, cache, position + self.segment), nll
        loss = functools.partial(self._loss, graphdef=self.grad_graphdef)
        (_, (nll, cache)), grads = jax.value_and_grad(loss, has_aux=True)(
            values, params, cache, inp, tgt)
        rows = inp.shape[0]
        # fast weights are per stream: the gradient of that stream's own mean loss
        grads = tuple(gr if g.params else jax.tree.map(lambda x: x * rows, gr)
                      for g, gr in zip(self.groups, grads))
        acc = jax.tree.map(jnp.add, acc, grads)
        position = position + self.segment
        current = self._values(params, cache)  # fast weights after the level's own write
        new_v, new_o, new_a = [], [], []
        for g, a, o, v in zip(self.groups, acc, opt, current):
            v, o, a = self._step_group(g, position % g.chunk == 0, a, o, v)
            new_v.append(v), new_o.append(o), new_a.append(a)
        params, cache = self._insert(tuple(new_v), params, cache)
        return (params, tuple(new_o), tuple(new_a), cache, position), nll

    def _learn(self, state: LearnerState, tokens: Array) -> tuple[LearnerState, Array]:
        b, s = tokens.shape[0], self.segment
        n = (tokens.shape[1] - 1) // s
        split = lambda x: jnp.moveaxis(x.reshape(b, n, s), 1, 0)  # [n, B, S]
        carry = (state.params, state.opt, state.acc, state.cache, state.position)
        carry, nll = jax.lax.scan(self._segment, carry, (split(tokens[:, :-1]),
                                                         split(tokens[:, 1:])))
        return LearnerState(*carry), jnp.moveaxis(nll, 0, 1).reshape(b, n * s)


__all__ = ["Learner", "LearnerState"]
