"""A sequence mixer defined as one level over hope_jax.core (design §1.5, §3.5, §4).

Every recurrent baseline (linear attention, DeltaNet, Gated DeltaNet, TTT) and the Titans neural
memory are this one module with different level settings; there is no separate recurrence code.
Dataflow (design §3.5; Titans Sec. 4.4):

    x̃_p = SiLU(CausalConv₄(u W_p)),  p ∈ {q, k, v}           (conv optional)
    q, k = L2Norm(x̃_q), L2Norm(x̃_k) per head;  v = x̃_v
    η = η_max σ(u w_η + b_η),  α = σ(u w_α + b_α),  β = σ(u w_β + b_β)   per head (D7, D19)
    o = chunked_scan(level, state, q, k, v, η, α, β)          (the level's write and read)
    y = W_O( RMSNorm_head(o) ⊙ σ(u W_gate) )                  (output norm and gate)

The chunked scan runs through the kernels API (`hope_jax.kernels`, `implementation=`) when an op
covers the level (`kernel_route`): the linear memory without momentum → `linear_chunk_update`,
the depth-2 residual MLP → `mlp_chunk_update`; everything else, and every call whose incoming state
is mid-stream (it carries a position), runs `core.chunked_scan` (table in docs/kernels.md).

Persistent memory (Titans Eq. 19): N_p learned tokens are prepended to the block input, so the
memory writes them first; their outputs are discarded. `init_state` runs that prefix, so
streaming from `init_state` equals one call on the whole sequence.

Memory state, momenta and gates are float32 whatever the compute dtype (D30).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax import core
from hope_jax.core.inner_optimizers import MomentumState
from hope_jax.kernels._dispatch import IMPLEMENTATIONS
from hope_jax.kernels.linear_chunk_update import linear_chunk_update
from hope_jax.kernels.mlp_chunk_update import mlp_chunk_update
from hope_jax.layers.conv import CausalConv
from hope_jax.layers.norms import HeadRMSNorm, l2_normalize
from hope_jax.layers.params import Dense, normal, param
from hope_jax.sharding.sequence_scan import sequence_scan, sequence_shards

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MemoryMixerConfig:
    """Settings of a level mixer.

    Level (design §1.5):
      memory: "matrix" (`M k`) or "mlp" (residual MLP `x + W₁ σ(W₂ x)`, design §3.1).
      memory_depth, memory_expansion: layers and hidden width (× d_h) of the "mlp" memory.
      objective: "l2" (½‖M(k) − v‖², D16) or "dot" (−⟨M(k), v⟩).
      momentum: S_t = β_t S_{t−1} − η_t ∇ℓ (Titans Eq. 18; β gate).
      retention: α_t multiplies the old state (α gate; "weight decay" in Titans Table 5).
      delta: the DGD / delta-rule preconditioner `M (α I − η k kᵀ)` (design §2.3).
      momentum_dampening: S_t = β S_{t−1} − (1 − β) η ∇ℓ (momentum as an average, docs/hope.md).
      normalize: True / "key": η' = η/(1 + η‖k‖²) (design §2.3); "curvature": η' = η/(1 + ηρ)
        with the gradient's own curvature ρ (equal to "key" for the matrix memory), times the
        chunk-causal μ_t inside a chunk; "curvature_token": without μ_t (docs/hope.md).
      gated: Gated DeltaNet's α on the k kᵀ term.
      chunk_size, read, remat, method, scan_group: passed to `core.Level`.
      gradient: "full" differentiates through every write (D8's meta-gradient); "stop" treats
        the writes as constants (core path only: the kernels always differentiate fully).
    Block:
      num_heads, head_dim (default d / H); conv, conv_kernel: causal depthwise conv + SiLU on
      q, k, v; qk_l2: L2-normalise q and k per head; v_l2: L2-normalise v per head (unit-norm
      targets; on in the Titans factories, docs/layers.md).
    Gates (D7, D19): eta_max; fixed_eta (a constant η, e.g. 1 for linear attention, instead of a
      gate); eta_bias, alpha_bias, beta_bias; gate_init_std (0 = zero weights, D19).
    Output: out_norm (per-head RMSNorm), out_gate (σ(u W_gate)).
    memory_init: "default" (core init, D19) or "zeros" (M_0 = 0, the baselines' usual start).
    num_persistent: N_p persistent tokens (Titans Eq. 19).
    implementation: the kernels' `implementation=` ("auto", "reference", "xla", "pallas_tpu",
      "pallas_gpu", "interpret") for levels an op covers (`kernel_route`); other levels ignore it.
    """

    num_heads: int
    head_dim: int | None = None
    memory: str = "matrix"
    memory_depth: int = 2
    memory_expansion: float = 4.0
    objective: str = "l2"
    momentum: bool = False
    momentum_dampening: bool = False
    retention: bool = True
    delta: bool = False
    normalize: bool | str = False
    gated: bool = False
    chunk_size: int = 64
    read: str = "post"
    remat: bool = True
    method: str = "auto"
    scan_group: int = 1
    gradient: str = "full"
    conv: bool = True
    conv_kernel: int = 4
    qk_l2: bool = True
    v_l2: bool = False
    eta_max: float = 1.0
    fixed_eta: float | None = None
    eta_bias: float = -2.0
    alpha_bias: float = 5.0
    beta_bias: float = 2.0
    gate_init_std: float = 0.0
    out_norm: bool = True
    out_gate: bool = True
    memory_init: str = "default"
    num_persistent: int = 0
    implementation: str = "auto"

    def __post_init__(self):
        if self.memory not in ("matrix", "mlp"):
            raise ValueError(f"memory must be 'matrix' or 'mlp', got {self.memory!r}")
        core.objectives.by_name(self.objective)  # ValueError unless "l2" or "dot"
        if self.memory_init not in ("default", "zeros"):
            raise ValueError(f"memory_init must be 'default' or 'zeros', got {self.memory_init!r}")
        if self.normalize not in core.inner_optimizers.STEP_NORMALIZATIONS:
            raise ValueError(f"normalize must be False, True, 'key', 'curvature' or "
                             f"'curvature_token', "
                             f"got {self.normalize!r}")
        if self.eta_max <= 0:
            raise ValueError(f"eta_max must be > 0, got {self.eta_max}")
        if self.gradient not in core.level.GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {core.level.GRADIENT_MODES}, "
                             f"got {self.gradient!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, "
                             f"got {self.implementation!r}")

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> MemoryMixer:
        return MemoryMixer(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


@functools.cache
def build_level(config: MemoryMixerConfig) -> core.Level:
    """The `core.Level` of a mixer config (cached: equal configs share one Level object, so
    jitted functions of equal models hit the same cache)."""
    if config.memory == "matrix":
        memory = core.matrix_memory()
    else:
        memory = core.residual_mlp_memory(expansion=config.memory_expansion,
                                          depth=config.memory_depth)
    objective = core.objectives.by_name(config.objective)
    if config.delta:
        opt = core.dgd(momentum=config.momentum, retention=config.retention,
                       normalize=config.normalize, gated=config.gated,
                       dampening=config.momentum_dampening)
    elif config.momentum:
        opt = core.momentum_gd(retention=config.retention, normalize=config.normalize,
                               dampening=config.momentum_dampening)
    else:
        opt = core.gd(retention=config.retention, normalize=config.normalize)
    return core.Level(memory, objective, opt, chunk_size=config.chunk_size, read=config.read,
                      remat=config.remat, method=config.method, scan_group=config.scan_group,
                      gradient=config.gradient)


def kernel_route(config: MemoryMixerConfig) -> tuple[str | None, str]:
    """Which kernels op runs this mixer's level: ("linear" | "mlp", "") or (None, why not).

    linear_chunk_update: matrix memory, GD or DGD (delta / gated), retention or not, no momentum.
    mlp_chunk_update: the depth-2 residual MLP, momentum or not (β ≡ 0), DGD or not, no gated DGD.
    Both: any objective (l2 / dot), read mode, normalisation; `method="auto"` only (an explicit
    method pins a core path); the MLP needs `remat=True` (the ops always keep one state per chunk).
    """
    if config.method != "auto":
        return None, f"method={config.method!r} pins a core chunk path"
    if config.gradient != "full":
        return None, "gradient='stop' (the ops always differentiate through the writes)"
    if config.delta and config.gated and not config.retention:
        return None, "gated DGD without retention (the ops gate p by the retention α)"
    if config.memory == "matrix":
        if config.momentum:
            return None, "linear_chunk_update has no momentum"
        return "linear", ""
    if config.memory_depth != 2:
        return None, f"mlp_chunk_update is the depth-2 MLP (memory_depth={config.memory_depth})"
    if config.normalize in core.inner_optimizers.CURVATURE_NORMALIZATIONS:
        return None, "mlp_chunk_update has no curvature-normalised step"
    if config.momentum and config.momentum_dampening:
        return None, "mlp_chunk_update has no dampened momentum"
    if config.delta and config.gated:
        return None, "mlp_chunk_update has no gated DGD"
    if not config.remat:
        return None, "remat=False (the ops always rematerialise per chunk)"
    return "mlp", ""


class MemoryMixerState(NamedTuple):
    """conv: the q/k/v conv buffers ([B, K−1, H·d_h] each) or (); level: the level's state."""

    conv: tuple
    level: core.LevelState


class MemoryMixer(nnx.Module):
    """A level as a sequence mixer; interface `(u [B, T, d], state) -> (y [B, T, d], state)`."""

    def __init__(self, d_model: int, config: MemoryMixerConfig, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        h = config.num_heads
        dh = config.head_dim or d_model // h
        self.config = config
        self.num_heads, self.head_dim = h, dh
        self.level = build_level(config)
        self.kernel_op = kernel_route(config)[0]  # "linear", "mlp" or None (core.chunked_scan)
        self.memory_writes = True  # False: the write ablation (layers.memory_writes)
        self.dtype = dtype
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.w_q = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_k = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_v = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        if config.conv:
            self.conv_q = CausalConv(h * dh, config.conv_kernel, **kw)
            self.conv_k = CausalConv(h * dh, config.conv_kernel, **kw)
            self.conv_v = CausalConv(h * dh, config.conv_kernel, **kw)
        spec = self.level.spec
        gate_kw = dict(rngs=rngs, use_bias=True, init_std=config.gate_init_std,
                       dtype=jnp.float32, param_dtype=param_dtype)
        self.gate_eta = (Dense(d_model, h, ("embed", "heads"), bias_init=config.eta_bias, **gate_kw)
                         if config.fixed_eta is None else None)
        needs_alpha = spec.retention or spec.dgd_gated
        self.gate_alpha = (Dense(d_model, h, ("embed", "heads"), bias_init=config.alpha_bias,
                                 **gate_kw) if needs_alpha else None)
        self.gate_beta = (Dense(d_model, h, ("embed", "heads"), bias_init=config.beta_bias,
                                **gate_kw) if spec.momentum_slot is not None else None)
        # the meta-learned initial memory M_0, one per head (design §1.5; D19)
        init = self.level.memory.init(rngs.params(), h, dh, dh, jnp.float32)
        if config.memory_init == "zeros":
            init = tuple(jnp.zeros_like(w) for w in init)
        self.memory0 = nnx.List([nnx.Param(w.astype(param_dtype),
                                           logical_axes=("heads", "memory_out", "memory_in"))
                                 for w in init])
        self.out_norm = HeadRMSNorm(h, dh, **kw) if config.out_norm else None
        self.out_gate = (Dense(d_model, h * dh, ("embed", "heads"), **kw) if config.out_gate
                         else None)
        self.w_o = Dense(h * dh, d_model, ("heads", "embed"), **kw)
        self.persistent = (param(rngs, normal(1.0), (config.num_persistent, d_model),
                                 ("persistent", "embed"), param_dtype)
                           if config.num_persistent else None)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state_alignment(self) -> int:
        """A sequence may be cut at whole chunks (with persistent tokens the state streams from
        the prefix, so its cuts need no alignment)."""
        return self.config.chunk_size if self.persistent is None else 1

    def _fresh_state(self, batch_size: int) -> MemoryMixerState:
        conv = ()
        if self.config.conv:
            conv = tuple(c.init_state(batch_size) for c in (self.conv_q, self.conv_k, self.conv_v))
        params = tuple(w[...].astype(jnp.float32) for w in self.memory0)  # D30: fp32 state
        return MemoryMixerState(conv, self.level.init_state(params, batch_size))

    def init_state(self, batch_size: int, max_len: int = 0) -> MemoryMixerState:
        """State for a new sequence: fresh memory M_0, after writing the persistent prefix."""
        state = self._fresh_state(batch_size)
        if self.persistent is None:
            return state
        _, state = self._mix(self._prefix(batch_size), state)
        return state

    def _prefix(self, batch_size: int) -> Array:
        p = self.persistent[...].astype(self.dtype)
        return jnp.broadcast_to(p[None], (batch_size,) + p.shape)

    # -- forward -------------------------------------------------------------------------------
    def _heads(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def gates(self, u: Array) -> dict:
        """η, α, β [B, T, H] in float32 from the block input u [B, T, d] (D7)."""
        cfg = self.config
        u32 = u.astype(jnp.float32)
        if self.gate_eta is None:
            eta = jnp.full(u.shape[:2] + (self.num_heads,), cfg.fixed_eta, jnp.float32)
        else:
            eta = cfg.eta_max * jax.nn.sigmoid(self.gate_eta(u32))  # bounded by construction
        if not self.memory_writes:  # write ablation: η ≡ 0, α ≡ 1 keep M_0 exactly
            eta = jnp.zeros_like(eta)
        out = dict(eta=eta)
        if self.gate_alpha is not None:
            alpha = jax.nn.sigmoid(self.gate_alpha(u32))
            out["alpha"] = alpha if self.memory_writes else jnp.ones_like(alpha)
        if self.gate_beta is not None:
            out["beta"] = jax.nn.sigmoid(self.gate_beta(u32))
        return out

    def _run_op(self, level_state: core.LevelState, q, k, v, gates: dict
                ) -> tuple[Array, core.LevelState]:
        """The kernels op from a chunk-aligned state: (y, the chunk-aligned state after)."""
        cfg, spec = self.config, self.level.spec
        alpha = gates.get("alpha") if cfg.retention else None
        common = dict(chunk_size=cfg.chunk_size, objective=cfg.objective, dgd=cfg.delta,
                      normalize=bool(cfg.normalize), read=cfg.read,
                      implementation=cfg.implementation)  # "curvature" = "key" at depth 1
        if self.kernel_op == "linear":
            y, w = linear_chunk_update(q, k, v, gates["eta"], alpha, level_state.memory[0],
                                       gated=cfg.delta and cfg.gated, **common)
            memory, opt_state = (w,), level_state.opt_state
        else:
            slot = spec.momentum_slot
            if slot is None:  # no momentum: β ≡ 0 makes the op's S_t = −η G_t a plain GD step
                beta, momentum = jnp.zeros_like(gates["eta"]), None
            else:
                beta, momentum = gates["beta"], level_state.opt_state[slot].momentum
            y, memory, new_momentum = mlp_chunk_update(
                q, k, v, gates["eta"], alpha, beta, level_state.memory, momentum,
                activation=self.level.memory.activation, **common)
            opt_state = level_state.opt_state
            if slot is not None:
                opt_state = (opt_state[:slot] + (MomentumState(tuple(new_momentum)),)
                             + opt_state[slot + 1:])
        position = jnp.asarray(q.shape[1], jnp.int32)
        return y, core.LevelState(memory=tuple(memory), opt_state=opt_state,
                                  snapshot=tuple(memory), position=position)

    def _scan(self, level_state: core.LevelState, q, k, v, gates: dict, keep_state: bool
              ) -> tuple[Array, core.LevelState]:
        """The level over the sequence: the kernels op when it covers the level and the state is
        chunk-aligned (a fresh sequence: position None), else `core.chunked_scan`.

        When the state after is kept and T is not a multiple of C, the op runs the whole chunks
        and the core the last partial chunk, so the state's snapshot and position are the core's.
        """
        if self.kernel_op is None or level_state.position is not None:
            return core.chunked_scan(self.level, level_state, q, k, v, **gates)
        t, c = q.shape[1], self.config.chunk_size
        head = (t // c) * c if keep_state else t
        if head == 0:
            return core.chunked_scan(self.level, level_state, q, k, v, **gates)
        if head == t:
            return self._run_op(level_state, q, k, v, gates)
        cut = lambda x, sl: x[:, sl]
        y0, mid = self._run_op(level_state, *(cut(x, slice(None, head)) for x in (q, k, v)),
                               {n: cut(g, slice(None, head)) for n, g in gates.items()})
        tail = slice(head, None)
        y1, end = core.chunked_scan(self.level, mid, *(cut(x, tail) for x in (q, k, v)),
                                    **{n: cut(g, tail) for n, g in gates.items()})
        return jnp.concatenate([y0, y1], axis=1), end

    def _mix(self, u: Array, state: MemoryMixerState, keep_state: bool = True
             ) -> tuple[Array, MemoryMixerState]:
        cfg = self.config
        xq, xk, xv = self.w_q(u), self.w_k(u), self.w_v(u)
        conv_state = state.conv
        if cfg.conv:  # Titans Sec. 4.4: projection → causal conv 4 → SiLU
            (xq, cq), (xk, ck), (xv, cv) = (conv(x, s) for conv, x, s in
                                            zip((self.conv_q, self.conv_k, self.conv_v),
                                                (xq, xk, xv), conv_state))
            xq, xk, xv = jax.nn.silu(xq), jax.nn.silu(xk), jax.nn.silu(xv)
            conv_state = (cq, ck, cv)
        q, k, v = self._heads(xq), self._heads(xk), self._heads(xv)
        if cfg.qk_l2:
            q, k = l2_normalize(q), l2_normalize(k)
        if cfg.v_l2:  # unit-norm targets (docs/layers.md, Titans' step bound)
            v = l2_normalize(v)
        # split over the mesh's `sequence` axis when there is one (segments of whole chunks; not
        # state_alignment, which speaks of the sequence after the persistent prefix)
        o, level_state = sequence_scan(
            lambda _, st, xs: self._scan(st, *xs, keep_state), (), state.level,
            (q, k, v, self.gates(u)), align=self.config.chunk_size)
        if self.out_norm is not None:
            o = self.out_norm(o)
        o = o.reshape(*o.shape[:2], -1).astype(self.dtype)
        if self.out_gate is not None:
            o = o * jax.nn.sigmoid(self.out_gate(u))
        return self.w_o(o), MemoryMixerState(conv_state, level_state)

    def __call__(self, u: Array, state: MemoryMixerState | None = None
                 ) -> tuple[Array, MemoryMixerState | None]:
        """u [B, T, d] → (y [B, T, d], state). state None = a fresh sequence (training)."""
        if state is not None:
            return self._mix(u, state)
        b = u.shape[0]
        if self.persistent is not None and sequence_shards(u.shape[1], 1) > 1:
            # split over the `sequence` axis: write the persistent prefix first (init_state),
            # then stream the sequence from there, so its segments need not start at chunks
            y, _ = self._mix(u, self.init_state(b))
            return y, None
        n_p = self.config.num_persistent
        x = u if self.persistent is None else jnp.concatenate(
            [self._prefix(b), u.astype(self.dtype)], axis=1)
        y, _ = self._mix(x, self._fresh_state(b), keep_state=False)
        return y[:, n_p:], None
