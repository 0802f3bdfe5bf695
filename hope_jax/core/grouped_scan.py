"""`lax.scan` whose backward pass stores one carry per group of steps (design D30).

A chunked memory scan with `jax.checkpoint` on its step keeps, for the backward pass, the carry
of every step: the whole state of every memory (and its momentum) at every chunk boundary. For
Hope's self-modifying mixer that state is six residual-MLP memories per head, so at small chunk
sizes the saved carries dominate a training step's memory. Grouping the steps (an outer scan
over groups of G steps, each group an inner scan under its own `jax.checkpoint`) keeps only the
carries at group boundaries, n/G of them, and recomputes one group's G carries at a time in the
backward pass: about n/G + G saved states instead of n, for one more forward pass of the scan
(ttt-lm-jax's `scan_checkpoint_group_size` does the same).

Values and gradients are those of the plain scan: only what is stored for the backward changes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _length(xs: Any) -> int:
    return jax.tree.leaves(xs)[0].shape[0]


def grouped_scan(body: Callable, carry: Any, xs: Any, *, remat: bool = True,
                 group: int = 1) -> tuple[Any, Any]:
    """`lax.scan(body, carry, xs)`; with `remat` each step is rematerialised in the backward
    (`jax.checkpoint`), and with `group` > 1 only every group-th carry is stored.

    The first ⌊n/G⌋·G steps run as ⌊n/G⌋ checkpointed groups and the rest as plain checkpointed
    steps, so any length works. Leaves of `xs` may be None.
    """
    if not remat:
        return jax.lax.scan(body, carry, xs)
    step = jax.checkpoint(body, prevent_cse=False)
    n = _length(xs)
    if group <= 1 or n < 2 * group:
        return jax.lax.scan(step, carry, xs)
    full = (n // group) * group

    def regroup(x):
        return x[:full].reshape((n // group, group) + x.shape[1:])

    @jax.checkpoint
    def one_group(c, xg):  # saved for the backward: its input carry only
        return jax.lax.scan(step, c, xg)

    carry, ys = jax.lax.scan(one_group, carry, jax.tree.map(regroup, xs))
    ys = jax.tree.map(lambda y: y.reshape((full,) + y.shape[2:]), ys)
    if full < n:
        carry, tail = jax.lax.scan(step, carry, jax.tree.map(lambda x: x[full:], xs))
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, tail)
    return carry, ys


__all__ = ["grouped_scan"]
