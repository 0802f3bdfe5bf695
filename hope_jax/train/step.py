"""The jitted train and eval steps: pure functions of arrays (docs/training.md).

Loss: next-token cross-entropy in float32 (the decoder returns float32 logits) over the targets
`tokens[:, 1:]`, pads masked out:

    L = Σ_{b,t} w_{b,t} · (logsumexp(z_{b,t}) − z_{b,t,y_{b,t}}) / Σ w,     w = [y ≠ pad]

Gradient accumulation: the batch is split into `grad_accum` micro-batches (row i goes to
micro-batch i mod A, so every micro-batch stays spread over the data axes), each micro-gradient
of Σ w·nll is summed in a `lax.scan` and divided by the batch's total Σ w: exactly the gradient
of one big batch (the mean of the micro-gradients when no token is padded).

NaN/Inf policy: if the loss, the gradient norm or any updated parameter is non-finite, the step
keeps params and optimizer state unchanged (a `jnp.where` select inside the jit), increments
`bad_steps` and reports `finite = 0`; a good step resets `bad_steps` to 0.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hope_jax.train.state import ParamCodec, Params, TrainState, all_finite

Array = jax.Array


def token_nll(logits: Array, targets: Array) -> Array:
    """logits [B, T, V], targets [B, T] int → negative log-likelihood [B, T] in nats (float32)."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return lse - picked


def make_apply(graphdef: nnx.GraphDef, rest: nnx.State, codec: ParamCodec
               ) -> Callable[[Params, Array], Array]:
    """(params, inputs [B, T]) → logits [B, T, V] float32, through `nnx.merge`."""

    def apply(params: Params, inputs: Array) -> Array:
        model = nnx.merge(graphdef, codec.to_state(params), rest)
        return model(inputs)

    return apply


NllFn = Callable[[Params, Array], Array]


def chunked_token_nll(head: Callable[[Array], Array], h: Array, targets: Array,
                      chunk: int) -> Array:
    """`token_nll(head(h), targets)` [B, T], `chunk` positions at a time.

    Each chunk's logits [B, chunk, V] are made, scored and dropped inside a rematerialised
    `lax.map` step, so the whole [B, T, V] logits (and their gradient) never exist at once: the
    backward keeps h alone and recomputes one chunk's logits at a time. Same values; the output
    head's gradient is summed chunk by chunk."""
    b, t, d = h.shape
    n = -(-t // chunk)
    if n * chunk != t:  # zero rows past the end, sliced off below
        h = jnp.pad(h, ((0, 0), (0, n * chunk - t), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, n * chunk - t)))
    hs = h.reshape(b, n, chunk, d).swapaxes(0, 1)
    ys = targets.reshape(b, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one(hc: Array, yc: Array) -> Array:
        return token_nll(head(hc), yc)

    nll = jax.lax.map(lambda xy: one(*xy), (hs, ys))     # [n, B, chunk]
    return nll.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]


def hidden_nll(model: nnx.Module, h: Array, targets: Array, chunk: int = 0) -> Array:
    """The decoder's last hidden states h [B, T, d] → NLL [B, T] of `targets` through its output
    head, `chunk` positions at a time when chunk > 0 (`chunked_token_nll`), else all at once."""
    if chunk > 0:
        return chunked_token_nll(model.head, h, targets, chunk)
    return token_nll(model.head(h), targets)


def chunked_apply_nll(model_of: Callable[[Params], nnx.Module], chunk: int) -> NllFn:
    """(params, tokens [B, T+1]) → NLL [B, T] with the output head and loss taken `chunk`
    positions at a time (`chunked_token_nll`; config `model.loss_chunk`). model_of: params → the
    Decoder (`nnx.merge`)."""

    def nll(params: Params, tokens: Array) -> Array:
        model = model_of(params)
        return hidden_nll(model, model.hidden(tokens[:, :-1]), tokens[:, 1:], chunk)

    return nll


def apply_nll(apply: Callable[[Params, Array], Array]) -> NllFn:
    """(params, tokens [B, T+1]) → per-token NLL [B, T] of the logits `apply` gives."""
    return lambda params, tokens: token_nll(apply(params, tokens[:, :-1]), tokens[:, 1:])


def make_train_step(apply: Callable[[Params, Array], Array], tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, pad_id: int, grad_accum: int = 1,
                    nll_fn: NllFn | None = None
                    ) -> Callable[[TrainState, Array, Array], tuple[TrainState, dict]]:
    """The train step `(state, tokens [B, T+1] int32, poison bool[]) → (state, metrics)`.

    `nll_fn(params, tokens)` → per-token NLL [B, T] replaces `apply`'s next-token NLL (e.g. the
    next-token CMS objective, `hope_jax.learn.next_token_objective`).

    `poison` (tests of the NaN policy only; pass False) multiplies the loss by NaN.
    Metrics (float32 scalars): loss, grad_norm (before clipping), lr (schedule at the global
    step), finite (1 = applied), bad_steps.
    """
    if grad_accum < 1:
        raise ValueError(f"optim.grad_accum must be ≥ 1, got {grad_accum}")

    nll = nll_fn or apply_nll(apply)

    def nll_sum(params: Params, tokens: Array, weight: Array) -> Array:
        return jnp.sum(nll(params, tokens) * weight)

    grad_fn = jax.value_and_grad(nll_sum)

    def train_step(state: TrainState, tokens: Array, poison: Array) -> tuple[TrainState, dict]:
        b, t1 = tokens.shape
        if b % grad_accum:
            raise ValueError(f"batch {b} is not divisible by optim.grad_accum={grad_accum}")
        weight = (tokens[:, 1:] != pad_id).astype(jnp.float32)
        n_tok = jnp.maximum(jnp.sum(weight), 1.0)
        # micro-batch i = rows i, i+A, i+2A, … : [B, …] → [A, B/A, …]
        micro_tok = tokens.reshape(b // grad_accum, grad_accum, t1).swapaxes(0, 1)
        micro_w = weight.reshape(b // grad_accum, grad_accum, t1 - 1).swapaxes(0, 1)

        def micro(carry, xs):
            g_sum, l_sum = carry
            l, g = grad_fn(state.params, *xs)
            return (jax.tree.map(jnp.add, g_sum, g), l_sum + l), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        if grad_accum == 1:
            l_sum, g_sum = grad_fn(state.params, tokens, weight)
        else:
            (g_sum, l_sum), _ = jax.lax.scan(micro, (zeros, jnp.zeros([], jnp.float32)),
                                             (micro_tok, micro_w))
        scale = jnp.where(poison, jnp.nan, 1.0) / n_tok
        loss = l_sum * scale
        grads = jax.tree.map(lambda g: (g * scale).astype(g.dtype), g_sum)
        grad_norm = optax.tree.norm(grads)

        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(new_params)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        bad = jnp.where(ok, 0, state.bad_steps + 1).astype(jnp.int32)
        new_state = TrainState(step=state.step + 1, params=keep(new_params, state.params),
                               opt_state=keep(new_opt, state.opt_state), bad_steps=bad)
        metrics = dict(loss=loss, grad_norm=grad_norm,
                       lr=jnp.asarray(schedule(state.step), jnp.float32),
                       finite=ok.astype(jnp.float32), bad_steps=bad.astype(jnp.float32))
        return new_state, metrics

    return train_step


def make_eval_step(apply: Callable[[Params, Array], Array], nll_fn: NllFn | None = None
                   ) -> Callable[[Params, Array, Array, Array], tuple[Array, Array, Array]]:
    """`(params, tokens [B, T+1], mask [B, T], token_bytes [V]) → (Σ nats, Σ tokens, Σ bytes)`
    over the masked targets; bits per byte = Σ nats / ln 2 / Σ bytes. `nll_fn` as in
    `make_train_step`."""
    token_nlls = nll_fn or apply_nll(apply)

    def eval_step(params: Params, tokens: Array, mask: Array, token_bytes: Array):
        targets = tokens[:, 1:]
        nll = token_nlls(params, tokens)
        mask = mask.astype(jnp.float32)
        nbytes = jnp.take(token_bytes, targets, axis=0).astype(jnp.float32)
        return jnp.sum(nll * mask), jnp.sum(mask), jnp.sum(nbytes * mask)

    return eval_step


_MEMORY_GROUPS = (
    (re.compile(r"^blocks/(\d+)/mlp/levels/(\d+)/"), "block{0}/cms_level{1}"),
    (re.compile(r"^blocks/(\d+)/mixer/memories/"), "block{0}/memory_init"),
)


def memory_groups(names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Per-memory-layer parameter groups: each CMS level of each block ('blockI/cms_levelJ') and
    each mixer's meta-learned initial memory states ('blockI/memory_init')."""
    groups: dict[str, list[str]] = {}
    for name in names:
        for pattern, tag in _MEMORY_GROUPS:
            m = pattern.match(name)
            if m:
                groups.setdefault(tag.format(*m.groups()), []).append(name)
    return {k: tuple(v) for k, v in groups.items()}


def memory_norms(params: Params, groups: dict[str, tuple[str, ...]]) -> dict[str, Array]:
    """Frobenius norm of each memory group's parameters {tag: float32 scalar}."""
    return {tag: jnp.sqrt(sum(jnp.sum(jnp.square(params[n].astype(jnp.float32))) for n in names))
            for tag, names in groups.items()}


__all__ = ["chunked_apply_nll", "chunked_token_nll", "make_apply", "make_eval_step",
           "make_train_step", "memory_groups", "memory_norms", "token_nll"]
