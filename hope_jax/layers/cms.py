"""The Continuum Memory System (design §5; D9, D10, D20–D23): a chain of MLP levels at many clocks.

It fills the decoder's MLP slot. Levels are listed in application order, fastest first (D10):

* an **in-context** level (`CMSLevel(chunk=C)`, C < T) is a SwiGLU whose weights are written inside
  the forward pass every C tokens by GD on its local objective and reset per sequence
  (`hope_jax.core.cms`);
* an **outer** level (`CMSLevel(period=P)`) is an ordinary SwiGLU whose parameters the outer
  optimizer updates only every P steps (D23). `update_periods(model)` labels every parameter with
  its period for `hope_jax.optim.multi_frequency`; the chunk of such a level is C = P · N_step.

Wiring (D20), with z_0 the block's normalised stream:
  sequential (default):  z_ℓ = z_{ℓ−1} + F_ℓ(z_{ℓ−1}); the block adds z_K − z_0 = Σ_ℓ F_ℓ(z_{ℓ−1})
  independent (Eq. 74):  the block adds Σ_ℓ w_ℓ F_ℓ(z_0), learned w_ℓ initialised to 1/K
  nested (Eq. 72, D24):  the sequential chain, and an in-context level is reset to its θ_0 at
                         every chunk boundary of the next (slower) level when that one is
                         in-context; θ_0 is updated with the slower level's period (outer P)
Each level's width is roundup_64((8/3)·d/K), so K levels cost about one Transformer++ MLP. With a
single outer level of period 1 this is exactly a Llama MLP (the "w/o CMS" ablation).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.core import cms as core_cms
from hope_jax.layers.mlp import SwiGLU, swiglu_hidden
from hope_jax.layers.norms import RMSNorm
from hope_jax.layers.params import constant, param
from hope_jax.sharding.sequence_scan import sequence_scan

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CMSLevel:
    """One level: in-context with chunk `chunk` (tokens), or outer with `period` (outer steps)."""

    chunk: int | None = None
    period: int | None = None
    eta_max: float = 0.1
    normalize: bool | str = False  # in-context step: False (plain GD), True / "layer" (per-layer
                                   # normalised), "curvature" (per-token Gauss–Newton; core.cms)
    retention: float = 1.0    # per write θ ← θ_0 + r(θ − θ_0) − η ḡ (1 = D22, core.cms)
    scan_group: int = 1       # in-context: the backward stores θ once per G chunks (D30)

    def __post_init__(self):
        if (self.chunk is None) == (self.period is None):
            raise ValueError("a CMSLevel needs exactly one of chunk (in-context, tokens) or "
                             f"period (outer, steps), got chunk={self.chunk}, period={self.period}")
        if self.normalize not in core_cms.NORMALIZATIONS:
            raise ValueError(f"CMSLevel.normalize must be one of {core_cms.NORMALIZATIONS}, got "
                             f"{self.normalize!r}")
        g = self.scan_group
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"CMSLevel.scan_group must be a positive int, got {g!r}")
        value = self.chunk if self.chunk is not None else self.period
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"CMSLevel chunk/period must be a positive int, got {value!r}")

    @property
    def in_context(self) -> bool:
        return self.chunk is not None


VARIANTS = ("sequential", "independent", "nested")


@dataclasses.dataclass(frozen=True)
class CMSConfig:
    """A CMS chain for the decoder's MLP slot.

    levels: CMSLevel tuple in application order; variant: "sequential", "independent" or
    "nested"; hidden: per-level SwiGLU width (default roundup_64((8/3)·d/K), D20); level_norm:
    chained variants only, every level after the first reads RMSNorm_ℓ(z_{ℓ−1}) (D20's per-level
    pre-norm option; docs/hope.md, "The CMS chain's gain").
    """

    levels: tuple = (CMSLevel(chunk=16), CMSLevel(period=2), CMSLevel(period=32))
    variant: str = "sequential"
    hidden: int | None = None
    level_norm: bool = False

    def __post_init__(self):
        if not self.levels or not all(isinstance(l, CMSLevel) for l in self.levels):
            raise ValueError("CMSConfig.levels must be a non-empty tuple of CMSLevel")
        if self.variant not in VARIANTS:
            raise ValueError(f"CMSConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if not isinstance(self.level_norm, bool):
            raise ValueError(f"CMSConfig.level_norm must be a bool, got {self.level_norm!r}")
        if self.level_norm and self.variant == "independent":
            raise ValueError("CMSConfig.level_norm applies to the chained variants (sequential, "
                             "nested); the independent variant reads z_0 at every level")
        if self.variant == "nested":
            for fast, slow in zip(self.levels, self.levels[1:]):
                if fast.in_context and slow.in_context and slow.chunk % fast.chunk:
                    raise ValueError(f"nested CMS: a slower level's chunk ({slow.chunk}) must be a "
                                     f"multiple of the faster level's ({fast.chunk}) (D24)")

    def reset_every(self, i: int) -> int | None:
        """Nested (D24): level i's θ_0 reset period in tokens (the next level's chunk), or None."""
        if self.variant != "nested" or i + 1 >= len(self.levels):
            return None
        fast, slow = self.levels[i], self.levels[i + 1]
        return slow.chunk if fast.in_context and slow.in_context else None

    def theta0_period(self, i: int) -> int:
        """Nested (D24): θ_0 of level i is updated with the slower level's period (1 if
        in-context)."""
        if self.variant != "nested" or i + 1 >= len(self.levels):
            return 1
        slow = self.levels[i + 1]
        return 1 if slow.in_context else slow.period

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> CMS:
        return CMS(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


class InContextSwiGLU(nnx.Module):
    """An in-context level: θ_0 (SwiGLU), W_tgt (init 0) and the step logit ρ (init 0), D22."""

    def __init__(self, d: int, hidden: int, level: CMSLevel, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32, reset_every: int | None = None):
        self.mlp = SwiGLU(d, hidden, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.w_target = param(rngs, constant(0.0), (d, d), ("embed", None), param_dtype)
        self.rho = param(rngs, constant(0.0), (), (), param_dtype)
        self.chunk, self.eta_max, self.dtype = level.chunk, level.eta_max, dtype
        self.normalize, self.retention = level.normalize, level.retention
        self.scan_group = level.scan_group
        self.reset_every = reset_every  # nested CMS (D24)
        self.memory_writes = True  # False: the write ablation (layers.memory_writes)

    @property
    def state_alignment(self) -> int:
        """A sequence may be cut at whole chunks and whole nested-reset periods."""
        return math.lcm(self.chunk, self.reset_every or 1)

    def theta0(self) -> core_cms.SwiGLUParams:
        k = lambda dense: dense.kernel[...].astype(jnp.float32)  # fp32 state (D30)
        return core_cms.SwiGLUParams(k(self.mlp.w_gate), k(self.mlp.w_up), k(self.mlp.w_down))

    def init_state(self, batch_size: int, max_len: int = 0) -> core_cms.InContextState:
        return core_cms.init_in_context_state(self.theta0(), batch_size)

    def __call__(self, z: Array, state=None):
        theta0 = self.theta0()
        eta_max = self.eta_max if self.memory_writes else 0.0

        def level(consts, st, zs):
            theta0, w_target, rho = consts
            return core_cms.in_context_level(theta0, w_target, rho, zs, self.chunk, eta_max, st,
                                             self.reset_every, self.normalize, self.retention,
                                             self.scan_group)

        consts = (theta0, self.w_target[...].astype(jnp.float32),
                  self.rho[...].astype(jnp.float32))
        start = core_cms.init_in_context_state(theta0, z.shape[0]) if state is None else state
        # split over the mesh's `sequence` axis when there is one
        y, new = sequence_scan(level, consts, start, z.astype(jnp.float32),
                               align=self.state_alignment)
        return y.astype(self.dtype), new


class CMS(nnx.Module):
    """A CMS chain; `(z_0 [B, T, d], state) -> (Σ_ℓ contributions [B, T, d], state)`."""

    def __init__(self, d_model: int, config: CMSConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        k = len(config.levels)
        hidden = config.hidden or swiglu_hidden(int(round(d_model / k)))
        self.config = config
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.levels = nnx.List([
            InContextSwiGLU(d_model, hidden, lvl, reset_every=config.reset_every(i), **kw)
            if lvl.in_context else SwiGLU(d_model, hidden, **kw)
            for i, lvl in enumerate(config.levels)])
        self.weights = (param(rngs, constant(1.0 / k), (k,), (None,), param_dtype)
                        if config.variant == "independent" else None)
        # Level ℓ ≥ 2's pre-norm (level 1 reads the block's normalised z_0).
        self.norms = (nnx.List([RMSNorm(d_model, **kw) for _ in range(k - 1)])
                      if config.level_norm else None)

    def init_state(self, batch_size: int, max_len: int = 0) -> tuple:
        return tuple(l.init_state(batch_size, max_len) for l in self.levels)

    def __call__(self, z0: Array, state: tuple | None = None) -> tuple[Array, tuple | None]:
        """z0 [B, T, d] (the normalised stream) → (what the block adds [B, T, d], state)."""
        states = (None,) * len(self.levels) if state is None else state
        new_states, out, z = [], jnp.zeros_like(z0), z0
        for i, (level, s) in enumerate(zip(self.levels, states)):
            x = z0 if self.weights is not None else z
            if self.norms is not None and i > 0:
                x = self.norms[i - 1](x)  # z_ℓ = z_{ℓ−1} + F_ℓ(RMSNorm_ℓ(z_{ℓ−1}))
            f, s = level(x, s)
            new_states.append(s)
            if self.weights is None:
                z = z + f.astype(z.dtype)  # sequential: z_ℓ = z_{ℓ−1} + F_ℓ(z_{ℓ−1})
            else:
                out = out + self.weights[...][i].astype(f.dtype) * f
        if self.weights is None:
            out = z - z0
        return out, None if state is None else tuple(new_states)


def update_periods(model: nnx.Module) -> Any:
    """The update period (in outer steps) of every parameter: a pytree shaped like
    `nnx.state(model, nnx.Param)` holding ints, 1 except inside outer CMS levels (D23) and the
    θ_0 of a nested CMS's in-context level below an outer one (D24)."""
    prefixes = {}
    for path, module in nnx.iter_modules(model):
        if isinstance(module, CMS):
            for i, lvl in enumerate(module.config.levels):
                if not lvl.in_context:
                    prefixes[tuple(path) + ("levels", i)] = lvl.period
                elif module.config.theta0_period(i) > 1:  # nested: θ_0 at the slower period
                    prefixes[tuple(path) + ("levels", i, "mlp")] = module.config.theta0_period(i)
    state = nnx.state(model, nnx.Param)

    def period(path, _leaf):
        keys = tuple(getattr(p, "key", getattr(p, "name", p)) for p in path)
        for prefix, value in prefixes.items():
            if keys[:len(prefix)] == prefix:
                return value
        return 1

    return jax.tree_util.tree_map_with_path(period, state)


def init_from_mlp(cms: CMS, mlp: SwiGLU | core_cms.SwiGLUParams) -> None:
    """Ad-hoc level stacking (design §5.5, D25): every level of `cms` starts from the weights of a
    (pretrained) SwiGLU MLP, in place, so that the CMS computes that MLP at step 0.

    `mlp` is a `SwiGLU` module (e.g. a Transformer++ block's MLP) or `SwiGLUParams` ([d, h],
    [d, h], [h, d]); every level needs width h. Independent variant: K copies with w_ℓ = 1/K
    (their weighted sum is the MLP); sequential / nested: level 1 a copy, levels 2..K copies with
    W_down = 0 (they add nothing until trained). An in-context level starts at these weights and
    then writes (η = η_max σ(ρ); at η_max → 0 it stays the MLP). Its W_tgt is left as it is.
    """
    if isinstance(mlp, SwiGLU):
        mlp = core_cms.SwiGLUParams(mlp.w_gate.kernel[...], mlp.w_up.kernel[...],
                                    mlp.w_down.kernel[...])
    for i, level in enumerate(cms.levels):
        dense = level.mlp if isinstance(level, InContextSwiGLU) else level
        for name, w in zip(("w_gate", "w_up", "w_down"), mlp):
            kernel = getattr(dense, name).kernel
            if kernel.shape != w.shape:
                raise ValueError(f"CMS level {i} {name} has shape {kernel.shape}, the MLP's is "
                                 f"{w.shape}: build the CMS with hidden = the MLP's width")
            zero = name == "w_down" and i > 0 and cms.weights is None
            kernel[...] = (jnp.zeros_like(w) if zero else w).astype(kernel.dtype)
    if cms.weights is not None:
        k = len(cms.levels)
        cms.weights[...] = jnp.full((k,), 1.0 / k, cms.weights.dtype)


def without_surrogate_writes(config: CMSConfig) -> CMSConfig:
    """The CMS with every in-context level's surrogate write off (η_max = 0; retention toward θ_0
    kept): for the next-token inner objective, whose steps the trainer adds
    (`hope_jax.learn.next_token_objective`)."""
    if not isinstance(config, CMSConfig) or not any(lvl.in_context for lvl in config.levels):
        raise ValueError("model.cms_objective='next_token' needs a CMS with an in-context level "
                         "(a Hope preset with switches.cms on)")
    levels = tuple(dataclasses.replace(lvl, eta_max=0.0) if lvl.in_context else lvl
                   for lvl in config.levels)
    return dataclasses.replace(config, levels=levels)

