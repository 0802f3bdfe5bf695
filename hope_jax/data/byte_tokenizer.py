"""Byte-level tokenizer: ids 0..255 are the UTF-8 bytes, then four specials (pad, bos, eos, unk)."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

TOKENIZER_JSON = "tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes as tokens; vocab_size = 256 + 4 specials. Needs no training and no files."""

    kind = "byte"
    vocab_size: int = 260
    pad_id: int = 256
    bos_id: int = 257
    eos_id: int = 258
    unk_id: int = 259

    def encode(self, text: str) -> np.ndarray:
        """text → int32 [n] byte ids (no bos/eos added)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Any) -> str:
        """int ids [n] → text; specials are skipped, invalid UTF-8 becomes U+FFFD."""
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        return a[(a >= 0) & (a < 256)].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        """int32 [vocab_size]: UTF-8 bytes each id stands for (1 for bytes, 0 for specials)."""
        out = np.zeros(self.vocab_size, dtype=np.int32)
        out[:256] = 1
        return out

    def save(self, directory: str | os.PathLike) -> None:
        """Writes `tokenizer.json` into `directory` (created if missing)."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, TOKENIZER_JSON), "w") as f:
            json.dump({"kind": self.kind, "vocab_size": self.vocab_size}, f)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=260)"
