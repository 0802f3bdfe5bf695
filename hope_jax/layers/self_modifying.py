"""Self-modifying Titans as a sequence mixer: the attention replacement of the Hope block.

Design §6.6 (D11, D17), with the in-context work in `hope_jax.core.self_modifying`:

    x̃_p = SiLU(CausalConv₄(u W_p)),  p ∈ {q, k, v}        W_p ∈ R^{d×H d_h}, split into heads
    o   = self-modifying memories (M_k, M_v, M_η, M_α, M_out; §6.1–6.4) read at q
    y   = W_O( RMSNorm_head(o) ⊙ σ(u W_gate) )

Ablation switches (D14; NL Table 6): `dgd`, `momentum`, `retention`, `adaptive_k`, `adaptive_v`,
`adaptive_q`, `objective` ("l2" / "dot"). Recurrent inference: pass the state back in; a call
with one token continues the sequence exactly (its cost is one output-memory chunk).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax import core
from hope_jax.core.self_modifying import (GateHeads, SelfModifyingLevel, SelfModifyingParams,
                                          SelfModifyingState, self_modifying_scan)
from hope_jax.layers.conv import CausalConv
from hope_jax.layers.norms import HeadRMSNorm
from hope_jax.layers.params import Dense
from hope_jax.sharding.sequence_scan import sequence_scan

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SelfModifyingConfig:
    """Settings of a self-modifying Titans mixer.

    num_heads, head_dim (default d / H); chunk_other / chunk_memory: C_oth, C_mem (D12);
    expansion / out_expansion: hidden width of M_k, M_v, M_η, M_α (and M_q) / of M_out (D11);
    out_memory: "mlp" (D11's residual MLP) or "matrix" (a depth-1 linear M_out = W q starting at
    W = 0 like DeltaNet's state; a random W_0 would add a read of norm ≈ 1 against writes of size
    η; use it with out_target="value", since M_out(v) = 0 at the start; docs/hope.md);
    dgd, momentum, retention, normalize: the inner optimizer (D3, D5; normalize True / "key" =
    η/(1+η‖k‖²), "curvature" = η/(1+ηρ) with the gradient's own curvature ρ, times the
    chunk-causal μ_t; "curvature_token" without μ_t; docs/hope.md);
    momentum_dampening: S = β S + (1 − β) u (momentum as an average; docs/hope.md);
    retain_to_init: α decays each memory toward its meta-learned M_□,0 instead of 0 (docs/hope.md);
    objective: "l2" or "dot";
    adaptive_k / adaptive_v / adaptive_q: D14 switches; out_target: "self" (Eq. 85) or "value"
    (D18); read: "pre" (Eq. 94) or "snapshot"; eta_max: η bound (D19); normalize_value:
    v = L2Norm(M_v(x̃_v)) (off = Eq. 84 as printed; on in the Hope presets, docs/hope.md);
    eta_bias, alpha_bias, beta_bias: initial gate biases (D19: −2, 5, 2); gradient: "full" /
    "stop" (D8); remat, scan_group: the backward's rematerialisation (`core.grouped_scan`);
    conv_kernel: width of the causal convolutions.
    """

    num_heads: int
    head_dim: int | None = None
    chunk_other: int = 16
    chunk_memory: int = 64
    expansion: float = 1.0
    out_expansion: float = 4.0
    out_memory: str = "mlp"
    dgd: bool = True
    momentum: bool = True
    momentum_dampening: bool = False
    retention: bool = True
    retain_to_init: bool = False
    normalize: bool | str = True
    objective: str = "l2"
    adaptive_k: bool = True
    adaptive_v: bool = True
    adaptive_q: bool = False
    out_target: str = "self"
    read: str = "pre"
    eta_max: float = 1.0
    normalize_value: bool = False
    eta_bias: float = -2.0
    alpha_bias: float = 5.0
    beta_bias: float = 2.0
    gradient: str = "full"
    remat: bool = True
    scan_group: int = 1
    conv_kernel: int = 4

    def __post_init__(self):
        if self.out_memory not in ("mlp", "matrix"):
            raise ValueError(f"SelfModifyingConfig.out_memory must be 'mlp' or 'matrix', "
                             f"got {self.out_memory!r}")
        self.level()  # validates chunk sizes, objective and switches early

    def level(self) -> SelfModifyingLevel:
        if self.dgd:
            opt = core.dgd(momentum=self.momentum, retention=self.retention,
                           normalize=self.normalize, dampening=self.momentum_dampening,
                           retain_to_init=self.retain_to_init)
        elif self.momentum:
            opt = core.momentum_gd(retention=self.retention, normalize=self.normalize,
                                   dampening=self.momentum_dampening,
                                   retain_to_init=self.retain_to_init)
        else:
            opt = core.gd(retention=self.retention, normalize=self.normalize,
                          retain_to_init=self.retain_to_init)
        return SelfModifyingLevel(
            memory=core.residual_mlp_memory(expansion=self.expansion),
            out_memory=(core.matrix_memory(init_std=0.0) if self.out_memory == "matrix"
                        else core.residual_mlp_memory(expansion=self.out_expansion)),
            objective=core.objectives.by_name(self.objective), optimizer=opt,
            chunk_other=self.chunk_other, chunk_memory=self.chunk_memory,
            adaptive_k=self.adaptive_k, adaptive_v=self.adaptive_v, adaptive_q=self.adaptive_q,
            out_target=self.out_target, read=self.read, eta_max=self.eta_max,
            normalize_value=self.normalize_value,
            gradient=self.gradient, remat=self.remat, scan_group=self.scan_group)

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> SelfModifyingMixer:
        return SelfModifyingMixer(d_model, self, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


class SelfModifyingMixerState(NamedTuple):
    conv: tuple
    level: SelfModifyingState


class SelfModifyingMixer(nnx.Module):
    """Self-modifying Titans mixer; `(u [B, T, d], state) -> (y [B, T, d], state)`."""

    def __init__(self, d_model: int, config: SelfModifyingConfig, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        h = config.num_heads
        if d_model % h and config.head_dim is None:
            raise ValueError(f"num_heads ({h}) must divide d_model ({d_model})")
        dh = config.head_dim or d_model // h
        self.config, self.num_heads, self.head_dim, self.dtype = config, h, dh, dtype
        self.level = config.level()
        self.memory_writes = True  # False: the write ablation (layers.memory_writes)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.w_q = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_k = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_v = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.convs = nnx.List([CausalConv(h * dh, config.conv_kernel, **kw) for _ in range(3)])
        init = self.level.init_params(rngs.params(), h, dh, jnp.float32)
        g = init.gates
        init = init._replace(gates=g._replace(b_eta=jnp.full_like(g.b_eta, config.eta_bias),
                                              b_alpha=jnp.full_like(g.b_alpha, config.alpha_bias),
                                              b_beta=jnp.full_like(g.b_beta, config.beta_bias)))
        self.memories = nnx.Dict({
            name: nnx.List([nnx.Param(w.astype(param_dtype),
                                      logical_axes=("heads", "memory_out", "memory_in"))
                            for w in ws]) for name, ws in init.memories.items()})
        self.gate_heads = nnx.List([
            nnx.Param(g.astype(param_dtype),
                      logical_axes=("heads", "head_dim") if g.ndim == 2 else ("heads",))
            for g in init.gates])
        self.out_norm = HeadRMSNorm(h, dh, **kw)
        self.out_gate = Dense(d_model, h * dh, ("embed", "heads"), **kw)
        self.w_o = Dense(h * dh, d_model, ("heads", "embed"), **kw)

    @property
    def state_alignment(self) -> int:
        """A sequence may be cut every C_mem tokens: there the state has the fresh form (D2)."""
        return self.level.chunk_memory

    def level_params(self) -> SelfModifyingParams:
        """The meta-learned initial memories and gate heads, in float32 (D30)."""
        memories = {n: tuple(w[...].astype(jnp.float32) for w in ws)
                    for n, ws in self.memories.items()}
        gates = GateHeads(*(g[...].astype(jnp.float32) for g in self.gate_heads))
        return SelfModifyingParams(memories, gates)

    def init_state(self, batch_size: int, max_len: int = 0) -> SelfModifyingMixerState:
        conv = tuple(c.init_state(batch_size) for c in self.convs)
        return SelfModifyingMixerState(conv, self.level.init_state(self.level_params(), batch_size))

    def __call__(self, u: Array, state: SelfModifyingMixerState | None = None
                 ) -> tuple[Array, SelfModifyingMixerState | None]:
        """u [B, T, d] → (y [B, T, d], state). state None = a fresh sequence (training)."""
        fresh = state is None
        if fresh:
            state = self.init_state(u.shape[0])
        params = self.level_params()
        paths, conv_state = [], []
        for proj, conv, s in zip((self.w_q, self.w_k, self.w_v), self.convs, state.conv):
            x, s = conv(proj(u), s)  # design §6.6: projection → causal conv 4 → SiLU
            paths.append(jax.nn.silu(x).reshape(*u.shape[:2], self.num_heads, self.head_dim))
            conv_state.append(s)
        level = self.level if self.memory_writes else dataclasses.replace(self.level, writes=False)
        # split over the mesh's `sequence` axis when there is one (segments of whole C_mem chunks)
        o, level_state = sequence_scan(
            lambda p, st, xs: self_modifying_scan(level, p, st, *xs), params, state.level,
            tuple(paths), align=self.state_alignment)
        o = self.out_norm(o).reshape(*u.shape[:2], -1).astype(self.dtype)
        y = self.w_o(o * jax.nn.sigmoid(self.out_gate(u)))
        return y, None if fresh else SelfModifyingMixerState(tuple(conv_state), level_state)
