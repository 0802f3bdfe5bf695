"""Deterministic evaluation batches with fixed shapes, spread over the whole split."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .prepare import PreparedData


def window_starts(n_tokens: int, seq_len: int, count: int | None = None) -> np.ndarray:
    """Start offsets of `count` windows of `seq_len` targets strided evenly over a stream of
    `n_tokens` tokens: window j of W = ⌈(n−1)/T⌉ is chosen for j = ⌊i·W/count⌋, i < count.
    With count ≥ W (or None) every window, in order."""
    windows = -(-(n_tokens - 1) // seq_len) if n_tokens > 1 else 0
    if count is None or count >= windows:
        return np.arange(windows, dtype=np.int64) * seq_len
    picks = (np.arange(count, dtype=np.int64) * windows) // max(count, 1)
    return picks * seq_len


def eval_batches(prepared: PreparedData, split: str = "valid", *, seq_len: int, batch_size: int,
                 max_batches: int | None = None, windows: int | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
    """Yields {"tokens": int32 [batch_size, seq_len + 1], "mask": float32 [batch_size, seq_len]}.

    The windows stream[s : s + T + 1] are taken at `window_starts`: all of the split when
    neither `windows` nor `max_batches` limits them, else `windows` (default
    max_batches · batch_size) windows strided evenly from the start to the end of the split
    (not a prefix: the start of a held-out split is often one work's title pages). The same
    `windows` count gives the same windows whatever the batch size. mask is 1 where the
    target is real text, 0 for padding (pad_id) in the last window and in filler rows."""
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be ≥ 1, got seq_len={seq_len}, "
                         f"batch_size={batch_size}")
    stream = prepared.tokens(split)
    n = stream.shape[0]
    if windows is None and max_batches is not None:
        windows = max_batches * batch_size
    starts = window_starts(n, seq_len, windows)
    pad = prepared.tokenizer.pad_id
    for b in range(-(-len(starts) // batch_size)):
        tokens = np.full((batch_size, seq_len + 1), pad, dtype=np.int32)
        mask = np.zeros((batch_size, seq_len), dtype=np.float32)
        for r, start in enumerate(starts[b * batch_size:(b + 1) * batch_size]):
            row = stream[start:start + seq_len + 1]
            tokens[r, :row.shape[0]] = row
            mask[r, :row.shape[0] - 1] = 1.0
        yield {"tokens": tokens, "mask": mask}
