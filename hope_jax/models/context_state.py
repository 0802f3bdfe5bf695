"""Context versus memory inside a decoder's state (`Decoder.init_state` / `forward`).

A decoder state holds two kinds of things:

  * *context*: attention KV caches and short-convolution buffers: the recent tokens themselves;
  * *memory*: the levels' states (Titans and self-modifying memories, in-context CMS levels, linear
    recurrences): what was written while reading.

`reset_context(carried, fresh)` keeps the memory of `carried` and restarts its context from
`fresh`: the state a model starts a new, unrelated text with when its memory is carried over
(the memorisation probe, `hope-jax learn`, carried-memory training).
"""
from __future__ import annotations

from typing import Any

import jax

from hope_jax.layers.attention import KVCache


def _is_context(x: Any) -> bool:
    return isinstance(x, KVCache) or (isinstance(x, tuple) and hasattr(x, "_fields")
                                      and "conv" in x._fields)


def reset_context(carried: Any, fresh: Any) -> Any:
    """`carried` with its KV caches and conv buffers replaced by those of `fresh` (same tree)."""
    def pick(c, f):
        if isinstance(c, KVCache):
            return f
        if isinstance(c, tuple) and hasattr(c, "_fields") and "conv" in c._fields:
            return c._replace(conv=f.conv, **{k: reset_context(getattr(c, k), getattr(f, k))
                                              for k in c._fields if k != "conv"})
        return c
    return jax.tree.map(pick, carried, fresh, is_leaf=_is_context)


__all__ = ["reset_context"]
