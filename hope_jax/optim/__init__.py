"""hope_jax.optim: deep optimizers of Nested Learning as optax transforms (design §2.4–2.9, §5.3).

Every `scale_by_*` transform outputs a descent direction (optax's sign); the complete optimizers
(`preconditioned_momentum`, `delta_momentum`, `dmgd`, `muon`, `m3`) apply the learning rate
(float or optax schedule) last. See docs/optimizers.md for the equation-to-code map.

`hope_jax.optim.outer` (not imported here) builds a training run's outer optimizer from
`config.optim` out of these transforms.
"""
from hope_jax.optim.delta_momentum import (
    DeltaMomentumState,
    delta_decay_flat,
    delta_decay_matrix,
    delta_momentum,
    scale_by_delta_momentum,
)
from hope_jax.optim.dmgd import DEFAULT_W2_INIT, DMGDState, dmgd, scale_by_dmgd
from hope_jax.optim.m3 import M3State, m3, scale_by_m3
from hope_jax.optim.multi_frequency import UpdateEveryState, multi_frequency, update_every
from hope_jax.optim.muon import muon, scale_by_muon
from hope_jax.optim.newton_schulz import (
    CUBIC,
    DEFAULT_NS_EXCLUDE,
    QUINTIC,
    matrix_mask,
    newton_schulz,
    orthogonalize,
    scale_by_newton_schulz,
)
from hope_jax.optim.preconditioned_momentum import (
    PreconditionedMomentumState,
    preconditioned_momentum,
    scale_by_preconditioned_momentum,
)
from hope_jax.optim.preconditioners import (
    DiagonalPreconditionerState,
    scale_by_diagonal_preconditioner,
)
from hope_jax.optim.sharding import init_on_mesh, place_on_mesh

__all__ = [
    "delta_decay_flat",
    "delta_decay_matrix",
    "delta_momentum",
    "dmgd",
    "init_on_mesh",
    "m3",
    "matrix_mask",
    "multi_frequency",
    "muon",
    "newton_schulz",
    "orthogonalize",
    "place_on_mesh",
    "preconditioned_momentum",
    "scale_by_delta_momentum",
    "scale_by_diagonal_preconditioner",
    "scale_by_dmgd",
    "scale_by_m3",
    "scale_by_muon",
    "scale_by_newton_schulz",
    "scale_by_preconditioned_momentum",
    "update_every",
    "CUBIC",
    "DEFAULT_NS_EXCLUDE",
    "DEFAULT_W2_INIT",
    "DMGDState",
    "DeltaMomentumState",
    "DiagonalPreconditionerState",
    "M3State",
    "PreconditionedMomentumState",
    "QUINTIC",
    "UpdateEveryState",
]
