"""Helpers for the evaluation tests: a byte tokenizer and tiny random models."""
from __future__ import annotations

import numpy as np
from flax import nnx

from hope_jax.models import Decoder, get_config


class LocalByteTokenizer:
    """Bytes 0..255, then pad 256, bos 257, eos 258, unk 259 (the hope_jax.data layout)."""

    vocab_size, pad_id, bos_id, eos_id = 260, 256, 257, 258

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", "replace")

    def token_bytes(self) -> np.ndarray:
        return np.asarray([1] * 256 + [0] * 4, np.int32)


def byte_tokenizer():
    try:
        from hope_jax.data import ByteTokenizer
        return ByteTokenizer()
    except ImportError:
        return LocalByteTokenizer()


def tiny_model(arch: str = "transformer", seed: int = 0, **overrides) -> Decoder:
    """A 1-block, d = 32 random model (smaller than the tiny preset)."""
    kw = dict(d_model=32, num_blocks=1)
    kw.update(overrides)
    return Decoder(get_config(arch, "tiny", **kw), rngs=nnx.Rngs(seed))
