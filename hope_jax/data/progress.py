"""Progress output on stderr for the slow stages of data preparation."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def stage(message: str, enabled: bool) -> None:
    """One line per stage on stderr."""
    if enabled:
        print(f"[hope_jax.data] {message}", file=sys.stderr, flush=True)


def bar(items: Iterable[T], desc: str, enabled: bool, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on stderr when enabled, else the items unchanged."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm
    yield from tqdm(items, desc=f"[hope_jax.data] {desc}", total=total, file=sys.stderr,
                    leave=False, mininterval=0.5)
