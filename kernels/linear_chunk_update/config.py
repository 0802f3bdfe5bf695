"""The static configuration of `linear_chunk_update` and the core `Level` it stands for."""
from __future__ import annotations

import dataclasses

from hope_jax import core

OBJECTIVES = ("l2", "dot")
READS = ("post", "pre", "snapshot")


@dataclasses.dataclass(frozen=True)
class LinearUpdateConfig:
    """A linear (matrix) memory `M(k) = W k` with retention and optionally the DGD preconditioner.

    Attributes:
      chunk_size: C; gradients of a chunk are taken at its start (D2).
      objective: "l2" (`e = W k − v`, Eq. 93; D4) or "dot" (`e = −v`, Eq. 92 with the sign fixed).
      dgd: the DGD / delta-rule preconditioner `W (α I − p k kᵀ)` (Eq. 88; D3).
      normalize: η read as η' = η/(1+η‖k‖²) in the step and in p (Sherman–Morrison, §2.3).
      gated: p multiplied by α (Gated DeltaNet's gradient at the decayed state, design §4).
      read: "post" (`M_t q_t`), "pre" (`M_{t−1} q_t`, Hope Eq. 94) or "snapshot" (`M_ξ q_t`).
    """

    chunk_size: int = 64
    objective: str = "l2"
    dgd: bool = True
    normalize: bool = True
    gated: bool = False
    read: str = "post"

    def __post_init__(self):
        c = self.chunk_size
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"chunk_size must be a positive int, got {c!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.read not in READS:
            raise ValueError(f"read must be one of {READS}, got {self.read!r}")
        if self.gated and not self.dgd:
            raise ValueError("gated=True needs dgd=True (it gates the DGD coefficient p)")

    @property
    def affine(self) -> float:
        """c of the objective's error `e = c·y − v`."""
        return 1.0 if self.objective == "l2" else 0.0

    def level(self, method: str = "auto") -> core.Level:
        """The core level with exactly this update (one source of truth for the math)."""
        if self.dgd:
            opt = core.dgd(momentum=False, retention=True, normalize=self.normalize,
                           gated=self.gated)
        else:
            opt = core.gd(retention=True, normalize=self.normalize)
        objective = core.l2() if self.objective == "l2" else core.dot_product()
        return core.Level(core.matrix_memory(), objective, opt, chunk_size=self.chunk_size,
                          read=self.read, method=method)
