"""The interfaces evaluation expects from its collaborators (structural, no imports needed)."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Tokenizer(Protocol):
    """What evaluation needs from a tokenizer (hope_jax.data's ByteTokenizer / BPE follow it)."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...

    def token_bytes(self) -> np.ndarray: ...
