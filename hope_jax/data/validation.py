"""Checks on token arrays."""
from __future__ import annotations

from typing import Any

import numpy as np


def check_token_ids(tokens: Any, vocab_size: int) -> None:
    """Raises ValueError naming the first id outside [0, vocab_size) and the vocab size."""
    a = np.asarray(tokens)
    if a.size == 0:
        return
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {a.dtype}")
    bad = (a < 0) | (a >= vocab_size)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"token id {int(a[pos])} at position {pos} is outside the vocabulary "
                         f"[0, {vocab_size}) (vocab_size={vocab_size}); {int(bad.sum())} bad ids "
                         f"in all")
