"""Multi-query associative recall (MQAR; Arora et al., Zoology, 2023).

A sequence lists `num_kv_pairs` key–value pairs, then queries: keys seen earlier, each followed by
its value. Only the value positions after a query key are scored. Keys are distinct within a
sequence (so every key has exactly one value) and every query key appeared among the pairs, so
each query is solvable from context alone.

Token layout (vocab V): 0 = filler, keys from [1, V/2), values from [V/2, V).

    k₁ v₁ k₂ v₂ … k_N v_N | q₁ a₁ q₂ a₂ … | 0 0 …        (length T + 1)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hope_jax.eval._scoring import progress_bar
from hope_jax.models import Decoder, DecoderConfig


def mqar_batch(rng: np.random.Generator, batch_size: int, seq_len: int, num_kv_pairs: int,
               vocab_size: int, num_queries: int | None = None) -> dict:
    """dict(tokens int32[B, T+1], mask float32[B, T]); mask_t = 1 where tokens[t+1] answers a query.

    num_queries defaults to as many as fit after the pairs.
    """
    n_keys = vocab_size // 2 - 1
    if num_kv_pairs > n_keys or num_kv_pairs > vocab_size - vocab_size // 2:
        raise ValueError(f"{num_kv_pairs} distinct keys/values do not fit in vocab {vocab_size}")
    room = (seq_len + 1 - 2 * num_kv_pairs) // 2
    num_queries = room if num_queries is None else num_queries
    if num_queries < 1 or num_queries > room:
        raise ValueError(f"seq_len {seq_len} holds {num_kv_pairs} pairs and at most {room} "
                         f"queries; asked for {num_queries}")
    tokens = np.zeros((batch_size, seq_len + 1), np.int32)
    mask = np.zeros((batch_size, seq_len), np.float32)
    q0 = 2 * num_kv_pairs
    for b in range(batch_size):
        keys = rng.choice(np.arange(1, vocab_size // 2), num_kv_pairs, replace=False)
        values = rng.integers(vocab_size // 2, vocab_size, num_kv_pairs)
        tokens[b, 0:q0:2], tokens[b, 1:q0:2] = keys, values
        which = rng.integers(0, num_kv_pairs, num_queries)
        end = q0 + 2 * num_queries
        tokens[b, q0:end:2], tokens[b, q0 + 1:end:2] = keys[which], values[which]
        mask[b, q0:end:2] = 1.0  # input = query key at t, target = its value at t + 1
    return dict(tokens=tokens, mask=mask)


def mqar_batches(seed: int, batch_size: int, seq_len: int, num_kv_pairs: int, vocab_size: int,
                 num_batches: int | None = None) -> Iterator[dict]:
    """`num_batches` MQAR batches (endless if None), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    i = 0
    while num_batches is None or i < num_batches:
        yield mqar_batch(rng, batch_size, seq_len, num_kv_pairs, vocab_size)
        i += 1


def _masked_loss(model: nnx.Module, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    logits = model(tokens[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def skip_nonfinite(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` whose update is skipped (parameters and state unchanged) when a gradient is not
    finite, however many times in a row (a NaN never reaches the parameters)."""
    return optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)


@nnx.jit
def _train_step(model: nnx.Module, opt: nnx.Optimizer, tokens: jax.Array,
                mask: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(_masked_loss)(model, tokens, mask)
    opt.update(model, grads)
    return loss


@nnx.jit
def _hits(model: nnx.Module, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    pred = jnp.argmax(model(tokens[:, :-1]), axis=-1)
    return ((pred == tokens[:, 1:]) * mask).sum(), mask.sum()


def mqar_accuracy(model: nnx.Module, batches: Iterable[Mapping[str, np.ndarray]]) -> float:
    """Fraction of query positions whose greedy prediction is the right value."""
    hits = total = 0.0
    for batch in batches:
        h, n = _hits(model, batch["tokens"], batch["mask"])
        hits, total = hits + float(h), total + float(n)
    if total == 0:
        raise ValueError("no query positions in the batches")
    return hits / total


def train_mqar(model_config: DecoderConfig, steps: int = 300, *, batch_size: int = 32,
               seq_len: int = 64, num_kv_pairs: int = 8, lr: float = 3e-3,
               weight_decay: float = 0.1, seed: int = 0, eval_batches: int = 4,
               progress: bool = False) -> tuple[Decoder, dict]:
    """Trains a fresh model on MQAR (AdamW, linear warm-up 10 % → cosine, clip 1.0).

    The vocabulary is model_config.vocab_size. Returns (model, dict(losses, accuracy,
    skipped_steps)) with accuracy measured on `eval_batches` held-out batches (a different seed).
    A step with a non-finite gradient leaves the parameters and the optimizer state unchanged
    (`skip_nonfinite`); its loss is recorded as it was and counted in skipped_steps.
    """
    model = Decoder(model_config, rngs=nnx.Rngs(seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), max(steps, 2),
                                                  lr * 0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay))
    opt = nnx.Optimizer(model, skip_nonfinite(tx), wrt=nnx.Param)
    data = mqar_batches(seed, batch_size, seq_len, num_kv_pairs, model_config.vocab_size)
    losses = []
    for _ in progress_bar(range(steps), progress, desc="mqar", unit="step"):
        batch = next(data)
        losses.append(float(_train_step(model, opt, batch["tokens"], batch["mask"])))
    held_out = mqar_batches(seed + 10_000, batch_size, seq_len, num_kv_pairs,
                            model_config.vocab_size, eval_batches)
    skipped = int(np.sum(~np.isfinite(losses)))
    return model, dict(losses=losses, accuracy=mqar_accuracy(model, held_out),
                       skipped_steps=skipped)
