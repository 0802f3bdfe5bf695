"""Deterministic, sequential evaluation batches over a whole split, with fixed shapes."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .prepare import PreparedData


def eval_batches(prepared: PreparedData, split: str = "valid", *, seq_len: int, batch_size: int,
                 max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields {"tokens": int32 [batch_size, seq_len + 1], "mask": float32 [batch_size, seq_len]}
    covering the split from its start in windows stream[i*T : i*T + T + 1]; mask is 1 where the
    target is real text and 0 for padding (pad_id) in the last window and in filler rows."""
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be ≥ 1, got seq_len={seq_len}, batch_size={batch_size}")
    stream = prepared.tokens(split)
    n = stream.shape[0]
    windows = -(-(n - 1) // seq_len) if n > 1 else 0
    batches = -(-windows // batch_size)
    if max_batches is not None:
        batches = min(batches, max_batches)
    pad = prepared.tokenizer.pad_id
    for b in range(batches):
        tokens = np.full((batch_size, seq_len + 1), pad, dtype=np.int32)
        mask = np.zeros((batch_size, seq_len), dtype=np.float32)
        for r in range(batch_size):
            start = (b * batch_size + r) * seq_len
            if start >= n - 1:
                break
            row = stream[start:start + seq_len + 1]
            tokens[r, :row.shape[0]] = row
            mask[r, :row.shape[0] - 1] = 1.0
        yield {"tokens": tokens, "mask": mask}
