"""Documents and the whole-document held-out split."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One unit of text that is never split across train and valid (a work, a book, a file)."""
    name: str
    text: str


def _unit_hash(key: str) -> float:
    """A deterministic number in [0, 1) for a key (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_by_hash(docs: Iterable[Document], fraction: float, *, by_text: bool = False
                  ) -> dict[str, list[Document]]:
    """Holds out about `fraction` of whole documents, chosen by a hash of the name (or the text).

    With at least two documents, both splits get at least one.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {fraction}")
    docs = list(docs)
    keyed = [(_unit_hash(d.text if by_text else d.name), i) for i, d in enumerate(docs)]
    held = {i for h, i in keyed if h < fraction}
    if len(docs) >= 2:
        order = sorted(keyed)
        if not held:
            held = {order[0][1]}
        elif len(held) == len(docs):
            held.discard(order[-1][1])
    return {"train": [d for i, d in enumerate(docs) if i not in held],
            "valid": [d for i, d in enumerate(docs) if i in held]}
