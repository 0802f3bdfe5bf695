"""The level: an associative memory together with everything that says how it learns (design §1.5).

A `Level` bundles memory architecture × objective × inner optimizer × update period (chunk size)
× read mode × meta-gradient mode. Its online state is a `LevelState`, one memory per sequence
and head. The level's meta-learned initial memory `M_0` is an ordinary parameter pytree with a
leading head axis that `init_state` broadcasts over the batch (outer gradients flow back to it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hope_jax.core import inner_optimizers as inner_opt
from hope_jax.core.memories import MLPMemory
from hope_jax.core.objectives import Objective

Array = jax.Array

READ_MODES = ("post", "pre", "snapshot")
GRADIENT_MODES = ("full", "stop")
METHODS = ("auto", "linear", "closed_form", "generic")


class LevelState(NamedTuple):
    """Online state of a level for a batch of sequences.

    Attributes:
      memory: running memory parameters `M_t`, a tuple of [B, H, out_l, in_l].
      opt_state: the inner optimizer's state (e.g. momentum `S_t`), leaves [B, H, ...].
      snapshot: the memory at the start of the current chunk, `M_{ξ(t)}` (D2); equals `memory`
        at a chunk boundary.
      position: number of tokens already written (int32 scalar), or None for a fresh state
        (position 0, chunk-aligned), which lets the scan skip the mid-chunk bookkeeping.
    """

    memory: tuple
    opt_state: Any
    snapshot: tuple
    position: Array | None = None


@dataclasses.dataclass(frozen=True)
class Level:
    """One level of a nested system (design §1.5).

    Attributes:
      memory: the memory architecture (matrix or residual MLP, see `memories.py`).
      objective: the inner objective ℓ(M(k), v) (see `objectives.py`).
      optimizer: the inner optimizer, an `InnerTransform` (see `inner_optimizers.py`).
      chunk_size: the update period C: gradients of a chunk are taken at its snapshot (D2).
      read: "post" reads `M_t(q_t)` (Titans, linear attention, DeltaNet, GDN, TTT), "pre" reads
        `M_{t−1}(q_t)` (Hope, Eq. 94), "snapshot" reads `M_{ξ(t)}(q_t)` (cheaper, blind to the
        current chunk). Running reads ("post"/"pre") are computed in dual form (D2).
      gradient: "full" differentiates through every write (meta-gradient, D8); "stop" treats the
        writes as constants so outer gradients reach the initial memory only through reads.
      remat: rematerialise each chunk in the backward pass (`jax.checkpoint`), so saved
        activations are one memory state per chunk (D30).
      scan_group: with remat, store that state only every `scan_group` chunks and recompute the
        rest (`grouped_scan`; 1 = every chunk).
      method: "closed_form" (dual / WY form; needs an optimizer with a canonical recurrence),
        "linear" (affine chunk maps; also needs a depth-1 memory and an affine objective),
        "generic" (materialised per-token snapshot gradients, any optimizer), or "auto" (the
        fastest that applies, in that order: linear, closed_form, generic).
    """

    memory: MLPMemory
    objective: Objective
    optimizer: inner_opt.InnerTransform
    chunk_size: int = 64
    read: str = "post"
    gradient: str = "full"
    remat: bool = True
    method: str = "auto"
    scan_group: int = 1

    def __post_init__(self):
        c = self.chunk_size
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"Level.chunk_size must be a positive int, got {c!r}")
        g = self.scan_group
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"Level.scan_group must be a positive int, got {g!r}")
        if self.read not in READ_MODES:
            raise ValueError(f"Level.read must be one of {READ_MODES}, got {self.read!r}")
        if self.gradient not in GRADIENT_MODES:
            raise ValueError(f"Level.gradient must be one of {GRADIENT_MODES}, "
                             f"got {self.gradient!r}")
        if self.method not in METHODS:
            raise ValueError(f"Level.method must be one of {METHODS}, got {self.method!r}")
        if self.method in ("closed_form", "linear") and self.spec is None:
            raise ValueError(f"Level.method={self.method!r} needs an inner optimizer in canonical "
                             "order (step size → [momentum] → [retention] → [DGD]); "
                             "use method='generic'")
        if self.method == "linear" and not self._linear_applies:
            raise ValueError("Level.method='linear' needs a depth-1 memory and an affine objective "
                             f"(l2 or dot), got depth {self.memory.depth} and objective "
                             f"{self.objective.name!r}")

    @property
    def spec(self) -> inner_opt.RecurrenceSpec | None:
        """The inner optimizer's canonical recurrence, or None (then only the generic path runs).

        For a depth-1 memory the curvature-normalised step is exactly the key-normalised one
        (ρ_t = ‖k_t‖², `inner_optimizers.curvature_step_size`), so the spec says so."""
        spec = inner_opt.recurrence_spec(self.optimizer)
        if spec is not None and spec.step_curvature and self.memory.depth == 1:
            spec = dataclasses.replace(spec, normalize_step=True, step_curvature=False,
                                       step_chunk_causal=False,
                                       dgd_normalize=spec.dgd_normalize or spec.dgd_curvature,
                                       dgd_curvature=False)
        return spec

    @property
    def _linear_applies(self) -> bool:
        spec = self.spec
        return (self.memory.depth == 1 and self.objective.affine is not None
                and (spec is None or spec.anchor_slot is None))

    @property
    def path(self) -> str:
        """The chunk implementation `chunked_scan` runs: "linear", "closed_form" or "generic"."""
        if self.method != "auto":
            return self.method
        if self.spec is None:
            return "generic"
        return "linear" if self._linear_applies else "closed_form"

    def init_state(self, params: tuple, batch_size: int) -> LevelState:
        """A fresh state for `batch_size` sequences from the initial memory `params` ([H, ...]
        leaves)."""
        memory = tuple(jnp.broadcast_to(w, (batch_size,) + w.shape) for w in params)
        opt_state = self.optimizer.init(memory)
        return LevelState(memory=memory, opt_state=opt_state, snapshot=memory, position=None)
