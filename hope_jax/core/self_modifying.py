"""Self-modifying Titans (design §6, NL Eqs. 83–90): levels that generate each other's inputs.

Per head, a set of residual-MLP memories learns in context: `M_k`, `M_v` produce keys and values,
`M_η`, `M_α` produce the gates, the output memory `M_out` (NL's `M_mem`) is read by static
queries, and every memory fits its own self-generated target `v̂_□ = M_□(v)` (Eq. 84) with the
same keys, gates and inner optimizer (DGD + momentum + retention by default, D3–D5):

    k_t = L2Norm(M_k(x̃_k)),  v_t = M_v(x̃_v),  q_t = L2Norm(x̃_q)                (D6, D17)
    η_t = η_max σ(w_ηᵀ M_η(x̃_k) + b_η),  α_t = σ(w_αᵀ M_α(x̃_k) + b_α),
    β_t = σ(w_βᵀ M_α(x̃_k) + b_β)
    o_t = M_{out,t−1}(q_t)                                                      (Eq. 94, D2)
    S_□ ← β S_□ − η' ∇L(M_□; k, v̂_□);  M_□ ← M_□(α I − η' k kᵀ) + S_□           (Eq. 88, D5)

Two chunk sizes (D12): k, v, η, α (and q) are generated from snapshots taken every `chunk_other`
tokens; the output memory's gradients use a snapshot taken every `chunk_memory` tokens (a multiple
of `chunk_other`). One `lax.scan` runs over sub-chunks of `chunk_other` tokens (design §6.4); each
sub-chunk's writes use the closed form of `closed_form.py` with the shared keys and gates, and the
output memory keeps a running state that is read in dual form while its snapshot lags.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hope_jax.core import inner_optimizers as inner_opt
from hope_jax.core.closed_form import closed_form_chunk, prepare_chunk
from hope_jax.core.grouped_scan import grouped_scan
from hope_jax.core.memories import MLPMemory, residual_mlp_memory
from hope_jax.core.objectives import Objective, l2

Array = jax.Array
sg = jax.lax.stop_gradient

SMALL = ("k", "v", "eta", "alpha", "q")  # memories on the chunk_other clock


class GateHeads(NamedTuple):
    """Per-head projections of `M_η`, `M_α` outputs to scalars (design §6.3): [H, d_h] and [H]."""

    w_eta: Array
    b_eta: Array
    w_alpha: Array
    b_alpha: Array
    w_beta: Array
    b_beta: Array


class SelfModifyingParams(NamedTuple):
    """Meta-learned (outer) parameters: initial memories `M_□,0` ([H, ...] leaves) and gate
    heads."""

    memories: dict
    gates: GateHeads


class SelfModifyingState(NamedTuple):
    """Per-sequence state (leaves [B, H, ...]).

    memories: running states `M_□,t`; momenta: `S_□,t` (empty dict without momentum);
    snapshots: the snapshot each memory's current chunk uses (D2); position: tokens written, or
    None for a fresh state.
    """

    memories: dict
    momenta: dict
    snapshots: dict
    position: Array | None = None


@dataclasses.dataclass(frozen=True)
class SelfModifyingLevel:
    """The in-context part of a self-modifying Titans mixer (design §6.1–6.4).

    Attributes:
      memory: architecture of M_k, M_v, M_η, M_α (and M_q): residual MLP, expansion 1 (D11).
      out_memory: architecture of the output memory: residual MLP, expansion 4 (D11).
      objective: inner objective of every memory (L2 by default, D4; "dot" ablation).
      optimizer: inner optimizer in canonical order (DGD + momentum + retention by default).
      chunk_other / chunk_memory: C_oth and C_mem (D12); C_mem must be a multiple of C_oth.
      adaptive_k / adaptive_v / adaptive_q: the ablation switches of D14 (q static by default, D6).
      out_target: "self" → v̂_out = M_out(v) (Eq. 85, default); "value" → v̂_out = v (D18).
      read: "pre" (Eq. 94, default) or "snapshot" for the output memory; "post" also allowed.
      eta_max: upper bound of the step size, η = η_max σ(·) (D7, D19).
      normalize_value: v = L2Norm(M_v(x̃_v)) instead of Eq. 84's unnormalised v (off by default,
        on in the Hope presets). v is the *input* of every target v̂_□ = M_□(v), so with it on all
        memory inputs (k, v, q) lie on the unit sphere that §2.3's stability bound assumes. Off,
        the target path is a positive feedback loop: a C = 1 write of W₁ is
        W₁ (α I − η' (h_k − h_v) h_kᵀ) + …, expansive once h_kᵀ h_v > ‖h_k‖² + (1 − α)/η', which
        ‖v‖ ≫ ‖k‖ = 1 brings about; momentum then integrates it (see docs/hope.md).
      gradient: "full" (meta-gradient through every write, D8) or "stop".
      stop_target: stop the outer gradient through the targets v̂ (D8 option).
      remat: rematerialise each sub-chunk in the backward pass (D30).
      scan_group: with remat, store the memories' state for the backward only every
        `scan_group` sub-chunks and recompute the rest (`grouped_scan`; 1 = every sub-chunk).
      writes: False freezes every memory at its initial state (η ≡ 0, α ≡ 1): the write
        ablation of the memory probe (`hope_jax.eval.memory_probe`); reads are unchanged.
    """

    memory: MLPMemory = residual_mlp_memory(expansion=1.0)
    out_memory: MLPMemory = residual_mlp_memory(expansion=4.0)
    objective: Objective = l2()
    optimizer: inner_opt.InnerTransform = inner_opt.dgd()
    chunk_other: int = 16
    chunk_memory: int = 64
    adaptive_k: bool = True
    adaptive_v: bool = True
    adaptive_q: bool = False
    out_target: str = "self"
    read: str = "pre"
    eta_max: float = 1.0
    normalize_value: bool = False
    gradient: str = "full"
    stop_target: bool = False
    remat: bool = True
    scan_group: int = 1
    writes: bool = True

    def __post_init__(self):
        for name in ("chunk_other", "chunk_memory"):
            c = getattr(self, name)
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(f"SelfModifyingLevel.{name} must be a positive int, got {c!r}")
        g = self.scan_group
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"SelfModifyingLevel.scan_group must be a positive int, got {g!r}")
        if self.chunk_memory % self.chunk_other:
            raise ValueError(f"SelfModifyingLevel.chunk_memory ({self.chunk_memory}) must be a "
                             f"multiple of chunk_other ({self.chunk_other}) (D12)")
        if inner_opt.recurrence_spec(self.optimizer) is None:
            raise ValueError("SelfModifyingLevel.optimizer must be in canonical order (step size → "
                             "[momentum] → [retention] → [DGD])")
        if self.out_target not in ("self", "value"):
            raise ValueError(f"SelfModifyingLevel.out_target must be 'self' or 'value', "
                             f"got {self.out_target!r}")
        if self.read not in ("pre", "post", "snapshot"):
            raise ValueError(f"SelfModifyingLevel.read must be 'pre', 'post' or 'snapshot', "
                             f"got {self.read!r}")
        if self.gradient not in ("full", "stop"):
            raise ValueError(f"SelfModifyingLevel.gradient must be 'full' or 'stop', "
                             f"got {self.gradient!r}")

    @property
    def spec(self) -> inner_opt.RecurrenceSpec:
        return inner_opt.recurrence_spec(self.optimizer)

    @property
    def small_memories(self) -> tuple[str, ...]:
        names = ["eta", "alpha"]
        if self.adaptive_k:
            names.insert(0, "k")
        if self.adaptive_v:
            names.insert(1 if self.adaptive_k else 0, "v")
        if self.adaptive_q:
            names.append("q")
        return tuple(names)

    @property
    def memory_names(self) -> tuple[str, ...]:
        return self.small_memories + ("out",)

    def _arch(self, name: str) -> MLPMemory:
        return self.out_memory if name == "out" else self.memory

    def init_params(self, key: Array, num_heads: int, d_head: int, dtype=jnp.float32
                    ) -> SelfModifyingParams:
        """Initial memories (D19: W_in ~ N(0, 1/d_h), W_out ~ N(0, 0.02²)) and gate heads
        (zero weights; b_η = −2, b_α = 5, b_β = 2)."""
        keys = jax.random.split(key, len(self.memory_names))
        memories = {n: self._arch(n).init(k, num_heads, d_head, d_head, dtype)
                    for n, k in zip(self.memory_names, keys)}
        zeros = jnp.zeros((num_heads, d_head), dtype)
        full = lambda v: jnp.full((num_heads,), v, dtype)
        gates = GateHeads(zeros, full(-2.0), zeros, full(5.0), zeros, full(2.0))
        return SelfModifyingParams(memories, gates)

    def init_state(self, params: SelfModifyingParams, batch_size: int) -> SelfModifyingState:
        """A fresh per-sequence state: every memory at its meta-learned initial value (D33)."""
        bcast = lambda w: jnp.broadcast_to(w, (batch_size,) + w.shape)
        memories = {n: tuple(bcast(w) for w in params.memories[n]) for n in self.memory_names}
        momenta = {}
        if self.spec.momentum_slot is not None:
            momenta = {n: tuple(jnp.zeros_like(w) for w in m) for n, m in memories.items()}
        return SelfModifyingState(memories, momenta, dict(memories), None)


def _l2_normalize(x: Array, eps: float = 1e-6) -> Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def _group(level: SelfModifyingLevel, per_name: dict) -> dict:
    """{name: tree} → {"small": the small memories' trees stacked on a memory axis just before each
    leaf's [out, in] (in the order of `small_memories`), "out": M_out's tree}: one batched
    computation for every small memory; the leading [B, H] or [H] axes stay in front."""
    small = [per_name[n] for n in level.small_memories]
    grouped = {"out": per_name["out"]}
    if small:
        grouped["small"] = jax.tree.map(lambda *ws: jnp.stack(ws, axis=-3), *small)
    return grouped


def _ungroup(level: SelfModifyingLevel, grouped: dict) -> dict:
    """Inverse of `_group`."""
    per_name = {n: jax.tree.map(lambda w: w[..., i, :, :], grouped["small"])
                for i, n in enumerate(level.small_memories)}
    per_name["out"] = grouped["out"]
    return per_name


def _generate(level: SelfModifyingLevel, small_snaps: tuple, gates: GateHeads, xq, xk, xv):
    """q, k, v, η, α, β of one sub-chunk from the small memories' snapshots (one head): [C, d]
    and [C]. small_snaps: stacked as in `_group`; the memories are applied in one batched call."""
    paths = {"k": xk, "v": xv, "eta": xk, "alpha": xk, "q": xq}
    names = level.small_memories
    outs = jax.vmap(level.memory.apply)(small_snaps, jnp.stack([paths[n] for n in names]))
    gen = {n: outs[i] for i, n in enumerate(names)}
    k = _l2_normalize(gen["k"] if level.adaptive_k else xk)
    v = gen["v"] if level.adaptive_v else xv
    if level.normalize_value:  # unit-norm target inputs (not in the papers; docs/hope.md)
        v = _l2_normalize(v)
    q = _l2_normalize(gen["q"] if level.adaptive_q else xq)
    h_eta, h_alpha = gen["eta"], gen["alpha"]
    eta = level.eta_max * jax.nn.sigmoid(h_eta @ gates.w_eta + gates.b_eta)
    alpha = jax.nn.sigmoid(h_alpha @ gates.w_alpha + gates.b_alpha)
    beta = jax.nn.sigmoid(h_alpha @ gates.w_beta + gates.b_beta)
    if not level.writes:  # η ≡ 0, α ≡ 1: every write is the identity (S stays 0)
        eta, alpha = jnp.zeros_like(eta), jnp.ones_like(alpha)
    return q, k, v, eta, alpha, beta


class SubChunkInputs(NamedTuple):
    """One sub-chunk's inputs for one head of one sequence (the scan maps them over [B, H]).

    xq, xk, xv: [C, d_h] the q-, k- and v-paths; mask: [C] tokens that write, shared by every
    batch row and head (None when all do).
    """

    xq: Array
    xk: Array
    xv: Array
    mask: Array | None


class MemoryCarry(NamedTuple):
    """The state one sub-chunk reads and writes: running states `M_□`, momenta `S_□` (empty
    without momentum) and the snapshots the gradients are taken at (D2). Outside the scan the
    dicts are keyed by memory name; inside it they are grouped (`_group`)."""

    running: dict
    momenta: dict
    snaps: dict


# vmap axes over [B, H]: everything is mapped except the shared mask.
_INPUT_AXES = SubChunkInputs(0, 0, 0, None)


def _sub_chunk(level: SelfModifyingLevel, gates: GateHeads, anchors: dict, carry: MemoryCarry,
               x: SubChunkInputs):
    """One sub-chunk of `chunk_other` tokens for one head: (o [C, d], running', momenta').

    The carry's dicts are grouped (`_group`): the small memories share their architecture, keys
    and gates, so their targets and closed-form writes run as one computation vmapped over the
    stacked memories, and M_out runs apart. anchors: the initial memories retention decays toward
    (`retain_to_init`, grouped), or {}."""
    spec = level.spec
    stop = level.gradient == "stop"
    snaps = carry.snaps
    q, k, v, eta, alpha, beta = _generate(level, snaps["small"], gates, x.xq, x.xk, x.xv)
    prep = prepare_chunk(spec, stop, q, k, eta, alpha if spec.retention or spec.dgd_gated else None,
                         beta if spec.momentum_slot is not None else None, x.mask)

    def write(arch: MLPMemory, read: str, run, mom, snap, target, anchor):
        if level.stop_target:
            target = sg(target)
        return closed_form_chunk(arch, level.objective, spec, read, stop, run, mom, snap, q, k,
                                 target, prep, anchor)

    # v̂_□ = M_□(v) at the snapshot (Eq. 84), every small memory at once
    targets = jax.vmap(level.memory.apply, in_axes=(0, None))(snaps["small"], v)
    _, run_small, mom_small = jax.vmap(functools.partial(write, level.memory, "none"))(
        carry.running["small"], carry.momenta.get("small"), snaps["small"], targets,
        anchors.get("small"))
    out_target = v if level.out_target == "value" else level.out_memory.apply(snaps["out"], v)
    out, run_out, mom_out = write(level.out_memory, level.read, carry.running["out"],
                                  carry.momenta.get("out"), snaps["out"], out_target,
                                  anchors.get("out"))
    new_running = {"small": run_small, "out": run_out}
    new_momenta = {} if mom_out is None else {"small": mom_small, "out": mom_out}
    return out, new_running, new_momenta


class _Layout(NamedTuple):
    """Where a call's T tokens sit in the scanned buffer of `n_sub` sub-chunks of `c_sub` tokens,
    aligned to the output memory's chunks.

    offset: the first token's place (the carried position modulo C_mem when streaming, else 0);
    mask: [n_sub, c_sub] the buffer slots holding real tokens; all_real: every slot does;
    ends_real: [n_sub] the sub-chunk really ends (the small memories' snapshots move, D2);
    ends_memory: [n_sub] it also ends an output memory chunk (M_out's snapshot may move);
    fresh_whole: a fresh state (no carried position) and T a whole number of sub-chunks.
    """

    total: int
    c_sub: int
    n_sub: int
    offset: Array | int
    mask: Array
    all_real: bool
    ends_real: Array
    ends_memory: Array
    fresh_whole: bool = False


def _layout(level: SelfModifyingLevel, state: SelfModifyingState, t: int) -> _Layout:
    """The buffer layout of a call: tokens at their absolute offsets, the padding around them does
    not write (D35)."""
    c_oth, c_mem = level.chunk_other, level.chunk_memory
    dynamic = state.position is not None
    # A decode step (one token, carried state) is a sub-chunk of length 1 against the carried
    # snapshots: O(1) in C_oth, C_mem and T.
    single = dynamic and t == 1
    if single:
        total, offset, c_sub = 1, 0, 1
    else:
        n_mem = math.ceil((t + (c_mem - 1 if dynamic else 0)) / c_mem)
        total = n_mem * c_mem
        offset = (state.position % c_mem).astype(jnp.int32) if dynamic else 0
        c_sub = c_oth
    n_sub = total // c_sub
    pos = jnp.arange(total)
    real = (pos >= offset) & (pos < offset + t)
    mask = real.reshape(n_sub, c_sub)
    if single:  # the snapshots move only when this token ends their chunk (D2)
        end = state.position + 1
        ends_real = (end % c_oth == 0)[None]
        ends_memory = (end % c_mem == 0)[None]
    else:
        ratio = c_mem // c_oth
        ends_real = mask[:, -1]  # a snapshot moves only when a chunk really ends (D2)
        ends_memory = (jnp.arange(n_sub) % ratio) == ratio - 1
    fresh_whole = not dynamic and total == t
    return _Layout(total, c_sub, n_sub, offset, mask, single or fresh_whole, ends_real,
                   ends_memory, fresh_whole)


def _place(x: Array, layout: _Layout, dtype) -> Array:
    """[B, T, H, d] → the layout's sub-chunks [n_sub, B, H, c_sub, d], zeros outside the tokens."""
    b, _, h, d = x.shape
    x = jnp.moveaxis(x.astype(dtype), 2, 1)  # [B, H, T, d]
    buf = jnp.zeros((b, h, layout.total, d), dtype)
    zero = jnp.zeros((), jnp.int32)
    buf = jax.lax.dynamic_update_slice(buf, x,
                                       (zero, zero, jnp.asarray(layout.offset, jnp.int32), zero))
    return jnp.moveaxis(buf.reshape(b, h, layout.n_sub, layout.c_sub, d), 2, 0)


def _scan_sub_chunks(level: SelfModifyingLevel, params: SelfModifyingParams, carry0: MemoryCarry,
                     xs: SubChunkInputs, layout: _Layout, dtype):
    """lax.scan of `_sub_chunk` over xs (leaves [n_sub, B, H, c_sub, d]; mask [n_sub, c_sub]).

    Returns (final carry, o [n_sub, B, H, c_sub, d])."""
    gates = jax.tree.map(lambda g: g.astype(dtype), params.gates)
    anchors = {}
    if level.spec.anchor_slot is not None:  # retention toward the initial memories M_□,0
        anchors = _group(level, jax.tree.map(lambda w: w.astype(dtype), params.memories))

    # Gate heads and anchors are per head: mapped over the head axis, shared across the batch.
    per_head = jax.vmap(lambda g, a0, c, x: _sub_chunk(level, g, a0, c, x),
                        in_axes=(0, 0, 0, _INPUT_AXES))
    per_batch = jax.vmap(per_head, in_axes=(None, None, 0, _INPUT_AXES))

    # A fresh sequence of whole sub-chunks: every sub-chunk ends, so the small memories'
    # snapshots equal their running states at every boundary (D2). The scan then carries them
    # once, and the backward's checkpoints hold a third less.
    tied = layout.fresh_whole

    def body(carry: MemoryCarry, inputs):
        x, end_real, end_mem = inputs
        if tied:
            carry = carry._replace(snaps={**carry.snaps, "small": carry.running["small"]})
        o, new_running, new_momenta = per_batch(gates, anchors, carry, x)
        keep = lambda new, old, when: jax.tree.map(lambda a, c: jnp.where(when, a, c), new, old)
        new_snaps = {"out": keep(new_running["out"], carry.snaps["out"], end_real & end_mem)}
        if not tied:
            new_snaps["small"] = keep(new_running["small"], carry.snaps["small"], end_real)
        return MemoryCarry(new_running, new_momenta, new_snaps), o

    group = lambda d: _group(level, d) if d else {}
    carry0 = MemoryCarry(group(carry0.running), group(carry0.momenta), group(carry0.snaps))
    if tied:
        carry0 = carry0._replace(snaps={"out": carry0.snaps["out"]})
    final, o = grouped_scan(body, carry0, (xs, layout.ends_real, layout.ends_memory),
                            remat=level.remat, group=level.scan_group)
    if tied:
        final = final._replace(snaps={**final.snaps, "small": final.running["small"]})
    ungroup = lambda d: _ungroup(level, d) if d else {}
    return MemoryCarry(ungroup(final.running), ungroup(final.momenta), ungroup(final.snaps)), o


def _check_inputs(state: SelfModifyingState, xq: Array, xk: Array, xv: Array) -> None:
    for name, x in (("xq", xq), ("xk", xk), ("xv", xv)):
        if getattr(x, "ndim", 0) != 4 or x.shape != xk.shape:
            raise ValueError(f"{name} must have shape [B, T, H, d_h] like xk {tuple(xk.shape)}, "
                             f"got {tuple(getattr(x, 'shape', ()))}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    b, _, h, _ = xk.shape
    first = state.memories["out"][0]
    if first.shape[:2] != (b, h):
        raise ValueError(f"state memories have leading dims {first.shape[:2]}, expected [B, H] = "
                         f"{(b, h)} from xk {tuple(xk.shape)}; build the state with init_state")


def self_modifying_scan(level: SelfModifyingLevel, params: SelfModifyingParams,
                        state: SelfModifyingState, xq: Array, xk: Array, xv: Array
                        ) -> tuple[Array, SelfModifyingState]:
    """Runs the self-modifying memories over a sequence.

    Args:
      xq, xk, xv: the q-, k- and v-paths after projection, convolution and SiLU (design §6.6),
        [B, T, H, d_h]. L2 normalisation of q and k happens inside.
      params: meta-learned initial memories and gate heads; state: per-sequence state.

    Returns:
      (o [B, T, H, d_h], new state): o = M_out read at q (before the output norm and gate).
    """
    _check_inputs(state, xq, xk, xv)
    b, t, h, d = xk.shape
    dtype = state.memories["out"][0].dtype
    dynamic = state.position is not None
    layout = _layout(level, state, t)
    xs = SubChunkInputs(*(_place(x, layout, dtype) for x in (xq, xk, xv)),
                        None if layout.all_real else layout.mask)
    cast = lambda tree: jax.tree.map(lambda w: w.astype(dtype), tree)
    carry0 = MemoryCarry(cast(state.memories), cast(state.momenta), cast(state.snapshots))
    final, o = _scan_sub_chunks(level, params, carry0, xs, layout, dtype)

    o = jnp.moveaxis(o, 0, 2).reshape(b, h, layout.total, d)
    o = jax.lax.dynamic_slice_in_dim(o, layout.offset, t, axis=2) if dynamic else o[:, :, :t]
    position = jnp.asarray(t, jnp.int32) + (state.position if dynamic else 0)
    new_state = SelfModifyingState(final.running, final.momenta, final.snaps,
                                   position.astype(jnp.int32))
    return jnp.moveaxis(o, 1, 2).astype(xq.dtype), new_state
