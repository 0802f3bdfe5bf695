"""Stand-in "models" whose log-likelihoods are known: a bigram table and a k-gram oracle."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

PAD = 256


class Bigram(nnx.Module):
    """logits[b, t] = table[tokens[b, t]]."""

    def __init__(self, table: np.ndarray):
        self.table = nnx.Param(jnp.asarray(table, jnp.float32))

    def __call__(self, tokens):
        return self.table[...][tokens]


def _hash(windows: np.ndarray) -> np.ndarray:
    """uint32 polynomial hash of the last axis (wrapping arithmetic, same in numpy and jax)."""
    h = np.zeros(windows.shape[:-1], np.uint32)
    for i in range(windows.shape[-1]):
        h = h * np.uint32(1000003) + windows[..., i].astype(np.uint32)
    return h


class KGramOracle(nnx.Module):
    """Puts logit `strength` on the next token of every k-gram seen in `sequences` (else 0)."""

    def __init__(self, sequences, vocab: int, k: int = 16, strength: float = 12.0):
        table = {}
        for seq in sequences:
            padded = np.concatenate([np.full(k - 1, PAD), np.asarray(seq)]).astype(np.int64)
            for t in range(len(seq) - 1):
                table[int(_hash(padded[None, t:t + k])[0])] = int(seq[t + 1])
        keys = np.asarray(sorted(table), np.uint32)
        self.keys = nnx.Variable(jnp.asarray(keys))
        self.next = nnx.Variable(jnp.asarray([table[int(x)] for x in keys], jnp.int32))
        self.k, self.vocab, self.strength = k, vocab, strength

    def __call__(self, tokens):
        b, t = tokens.shape
        padded = jnp.concatenate([jnp.full((b, self.k - 1), PAD, tokens.dtype), tokens], axis=1)
        h = jnp.zeros((b, t), jnp.uint32)
        for i in range(self.k):
            h = h * jnp.uint32(1000003) + padded[:, i:i + t].astype(jnp.uint32)
        keys = self.keys[...]
        pos = jnp.clip(jnp.searchsorted(keys, h), 0, keys.shape[0] - 1)
        hit = keys[pos] == h
        onehot = jnp.eye(self.vocab, dtype=jnp.float32)[self.next[...][pos]]
        return jnp.where(hit[..., None], self.strength * onehot, 0.0)
