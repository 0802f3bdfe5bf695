"""The training pipeline: shuffled, per-process, packed windows of the train token stream (grain).

Window i is stream[i*T : i*T + T + 1] (T = seq_len), so consecutive windows overlap by the one token
that is a target of one and the first input of the next; n = (tokens - 1) // T windows per epoch.
"""
from __future__ import annotations

from typing import Any

import grain
import numpy as np

from .prepare import PreparedData
from .shards import shard_dtype


class WindowReader:
    """Window index → int32 [T + 1] tokens; picklable (opens the memmap lazily in each process)."""

    def __init__(self, path: str, tokens: int, vocab_size: int, seq_len: int):
        self.path, self.tokens, self.vocab_size, self.seq_len = path, tokens, vocab_size, seq_len
        self.windows = (tokens - 1) // seq_len
        self._data: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_data"} | {"_data": None}

    def __call__(self, index: int) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=shard_dtype(self.vocab_size), mode="r",
                                   shape=(self.tokens,))
        start = (int(index) % self.windows) * self.seq_len
        return np.asarray(self._data[start:start + self.seq_len + 1], dtype=np.int32)


def _as_batch(tokens: np.ndarray) -> dict[str, np.ndarray]:
    return {"tokens": tokens}


def train_dataset(prepared: PreparedData, *, seq_len: int, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """The endless MapDataset of {"tokens": int32 [batch_size, seq_len + 1]} for one process."""
    info = prepared.splits["train"]
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be ≥ 1, got seq_len={seq_len}, "
                         f"batch_size={batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside "
                         f"[0, process_count={process_count})")
    if hasattr(prepared, "index"):        # PreparedShards: windows read from ArrayRecord shards
        from .shard_reader import ShardWindowReader
        reader = ShardWindowReader(prepared.tokens("train"), seq_len)
    else:
        reader = WindowReader(info.path, info.tokens, prepared.tokenizer.vocab_size, seq_len)
    per_process = reader.windows // process_count
    if per_process < batch_size:
        raise ValueError(
            f"the train split of {prepared.root} has {info.tokens} tokens = {reader.windows} "
            f"windows of seq_len={seq_len}, {per_process} per process for {process_count} "
            f"processes: too few "
            f"for batch_size={batch_size}")
    ds = grain.MapDataset.range(reader.windows).shuffle(seed=seed % 2**32)
    ds = ds[process_index:per_process * process_count:process_count]   # equal disjoint shares
    return ds.map(reader).batch(batch_size, drop_remainder=True).map(_as_batch).repeat(None)


def train_iterator(prepared: PreparedData, *, seq_len: int, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1, worker_count: int = 0
                   ) -> grain.DatasetIterator:
    """An endless iterator of {"tokens": int32 [batch_size, seq_len + 1]} (inputs [:, :-1],
    targets [:, 1:]), reshuffled every epoch; batch_size is per process, and process p of n reads a
    disjoint 1/n of each epoch's windows. `it.get_state()` is a JSON-ready dict; `it.set_state(s)`
    resumes exactly. worker_count > 0 reads in grain worker processes (needs parsed absl flags and
    a `__main__` guard in the entry script)."""
    ds = train_dataset(prepared, seq_len=seq_len, batch_size=batch_size, seed=seed,
                       process_index=process_index, process_count=process_count)
    it_ds = ds.to_iter_dataset()
    if worker_count > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it_ds)
