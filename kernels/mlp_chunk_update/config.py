"""The static configuration of `mlp_chunk_update` and the core `Level` it stands for."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from hope_jax import core

OBJECTIVES = ("l2", "dot")
READS = ("post", "pre", "snapshot")


@dataclasses.dataclass(frozen=True)
class MLPUpdateConfig:
    """The residual 2-layer MLP memory `M(x) = x + W_out σ(W_in x)` with momentum and retention.

    Titans (design §3.1, §3.4): `dgd=False, normalize=False, read="post"`. Self-modifying Titans /
    Hope (§6.2, §6.4; D3, D5): `dgd=True, normalize=True, read="pre"` for the output memory.

    Attributes:
      chunk_size: C; gradients of a chunk are taken at its start (D2).
      objective: "l2" (`e = M(k) − v`) or "dot" (`e = −v`).
      dgd: the DGD preconditioner `W_in (α I − p k kᵀ)` on the input-side layer (D3).
      normalize: η read as η' = η/(1+η‖k‖²) in the step and in p (§2.3).
      read: "post", "pre" or "snapshot" (D2).
      activation: σ (elementwise; GELU by default, D11). Its derivative comes from `jax.jvp`.
    """

    chunk_size: int = 64
    objective: str = "l2"
    dgd: bool = True
    normalize: bool = True
    read: str = "post"
    activation: Callable[[jax.Array], jax.Array] = jax.nn.gelu

    def __post_init__(self):
        c = self.chunk_size
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"chunk_size must be a positive int, got {c!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.read not in READS:
            raise ValueError(f"read must be one of {READS}, got {self.read!r}")

    @property
    def affine(self) -> float:
        return 1.0 if self.objective == "l2" else 0.0

    def level(self, hidden: int, method: str = "auto") -> core.Level:
        """The core level with exactly this update (one source of truth for the math)."""
        memory = core.MLPMemory(depth=2, hidden=hidden, activation=self.activation, residual=True)
        if self.dgd:
            opt = core.dgd(momentum=True, retention=True, normalize=self.normalize)
        else:
            opt = core.momentum_gd(retention=True, normalize=self.normalize)
        objective = core.l2() if self.objective == "l2" else core.dot_product()
        return core.Level(memory, objective, opt, chunk_size=self.chunk_size, read=self.read,
                          method=method)
