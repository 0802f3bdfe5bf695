"""Self-modifying Titans (design §6.9): the chunked scan against an explicit token loop of Eq. 88 +
D5.

The loop below holds the snapshots by the ξ rule with two chunk sizes (D12), generates q, k, v, η,
α, β from the k/v/η/α snapshots, reads M_{out,t−1}(q_t) (Eq. 94), and writes every memory with
autodiff gradients at its snapshot and the DGD + momentum + retention formulas written out here.
"""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

from hope_jax import core
from hope_jax.core.self_modifying import GateHeads, SelfModifyingLevel, self_modifying_scan
from level_cases import assert_close

B, H, D = 2, 2, 4


# The Hope presets' inner optimizer: curvature-normalised step, dampened momentum, retention
# toward the initial memories (docs/hope.md, "Stable writes that matter").
PRESET_OPTIMIZER = core.dgd(normalize="curvature", dampening=True, retain_to_init=True)


def _params(level, seed=0):
    params = level.init_params(jax.random.PRNGKey(seed), H, D, jnp.float64)
    ks = jax.random.split(jax.random.PRNGKey(seed + 100), 3)
    w = lambda k: 0.5 * jax.random.normal(k, (H, D), jnp.float64)  # non-zero gate heads
    g = params.gates
    gates = GateHeads(w(ks[0]), g.b_eta + 1.0, w(ks[1]), g.b_alpha - 2.0, w(ks[2]), g.b_beta)
    return params._replace(gates=gates)


def _inputs(t, seed=1):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [jax.random.normal(k, (B, t, H, D), jnp.float64) for k in ks]


def explicit_loop(level, params, xq, xk, xv):
    """Token loop of design §6.4 with both snapshot clocks; returns (o, memories, momenta)."""
    l2n = lambda x: x / jnp.sqrt(jnp.sum(x * x) + 1e-6)
    names = level.memory_names
    arch = {n: level._arch(n) for n in names}
    spec = level.spec
    momentum, dgd = spec.momentum_slot is not None, spec.dgd

    def loss(n, p, k, target):
        return level.objective.loss(arch[n].apply(p, k), target)

    def one_head(mems0, gates, xq, xk, xv):
        w = {n: list(mems0[n]) for n in names}
        s = {n: [jnp.zeros_like(a) for a in mems0[n]] for n in names}
        snap = {}
        outs = []
        for t in range(xk.shape[0]):
            for n in names:
                clock = level.chunk_memory if n == "out" else level.chunk_other
                if t % clock == 0:
                    snap[n] = tuple(w[n])
            ap = lambda n, x: arch[n].apply(snap[n], x)
            k = l2n(ap("k", xk[t]) if level.adaptive_k else xk[t])
            v = ap("v", xv[t]) if level.adaptive_v else xv[t]
            if level.normalize_value:  # unit-norm target inputs (docs/hope.md)
                v = l2n(v)
            q = l2n(ap("q", xq[t]) if level.adaptive_q else xq[t])
            eta = level.eta_max * jax.nn.sigmoid(ap("eta", xk[t]) @ gates.w_eta + gates.b_eta)
            alpha = jax.nn.sigmoid(ap("alpha", xk[t]) @ gates.w_alpha + gates.b_alpha)
            beta = jax.nn.sigmoid(ap("alpha", xk[t]) @ gates.w_beta + gates.b_beta)
            outs.append(arch["out"].apply(tuple(w["out"]), q))
            for n in names:
                target = v if (n == "out" and level.out_target == "value") else ap(n, v)
                g = jax.grad(lambda p: loss(n, p, k, target))(snap[n])
                eta_n = eta / (1 + eta * jnp.sum(k * k))
                if spec.step_curvature:  # η' = η/(1 + ηρ), ρ = ‖G‖²/‖e‖² at the snapshot
                    e = jax.grad(lambda y: level.objective.loss(y, target))(
                        arch[n].apply(snap[n], k))
                    eta_n = eta / (1 + eta * sum(jnp.sum(x * x) for x in g) / jnp.sum(e * e))
                eta_g = eta_n * (1 - beta) if spec.momentum_dampening else eta_n
                if spec.step_chunk_causal:  # × (1 + ⟨G, W_{t−1} − W_snap⟩/‖e‖²)
                    moved = sum(jnp.sum(gl * (wl - sl)) for gl, wl, sl in zip(g, w[n], snap[n]))
                    eta_g = eta_g * (1 + moved / jnp.sum(e * e))
                for l in range(len(w[n])):
                    if momentum:  # S ← β S − η' G; M ← M(α I − η' k kᵀ) + S (Eq. 88, D5)
                        s[n][l] = beta * s[n][l] - eta_g * g[l]
                        inc = s[n][l]
                    else:
                        inc = -eta_g * g[l]
                    new = alpha * w[n][l] + inc
                    if spec.anchor_slot is not None:  # retention toward M_□,0
                        new = new + (1 - alpha) * mems0[n][l]
                    if dgd and l == 0:
                        new = new - eta_n * jnp.outer(w[n][0] @ k, k)
                    w[n][l] = new
        return (jnp.stack(outs), {n: tuple(a) for n, a in w.items()},
                {n: tuple(a) for n, a in s.items()})

    mv = lambda x: jnp.moveaxis(x, 2, 1)
    per_head = jax.vmap(one_head, in_axes=(0, 0, 0, 0, 0))
    per_batch = jax.vmap(per_head, in_axes=(None, None, 0, 0, 0))
    o, w, s = per_batch(params.memories, params.gates, mv(xq), mv(xk), mv(xv))
    return jnp.moveaxis(o, 1, 2), w, s


@pytest.mark.parametrize("chunks, t, variant", [
    ((1, 1), 6, {}),
    ((2, 4), 9, {}),
    ((2, 4), 7, dict(adaptive_k=False, adaptive_q=True, out_target="value")),
    ((3, 3), 5, dict(adaptive_v=False)),
    ((1, 1), 5, dict(normalize_value=True)),
    ((2, 4), 9, dict(normalize_value=True)),
    ((2, 2), 5, dict(normalize_value=True, adaptive_v=False, out_target="value")),
    ((1, 1), 5, dict(normalize_value=True, optimizer=PRESET_OPTIMIZER)),
    ((2, 4), 9, dict(normalize_value=True, optimizer=PRESET_OPTIMIZER)),
    ((2, 4), 7, dict(normalize_value=True, optimizer=PRESET_OPTIMIZER,
                     out_memory=core.matrix_memory(), out_target="value")),
])
def test_chunked_equals_token_loop(x64, chunks, t, variant):
    """Outputs and final memories/momenta equal the explicit loop (float64, 1e-10), T odd."""
    level = SelfModifyingLevel(chunk_other=chunks[0], chunk_memory=chunks[1], **variant)
    params = _params(level)
    xs = _inputs(t)
    scan = jax.jit(lambda p, *x: self_modifying_scan(level, p, level.init_state(p, B), *x))
    o, state = scan(params, *xs)
    o_ref, w_ref, s_ref = explicit_loop(level, params, *xs)
    assert_close(o, o_ref, 1e-10, "outputs")
    assert_close(state.memories, w_ref, 1e-10, "memories")
    assert_close(state.momenta, s_ref, 1e-10, "momenta")


@pytest.mark.parametrize("normalize_value, preset", [(False, False), (True, False), (True, True)])
def test_meta_gradients_equal_token_loop(x64, normalize_value, preset):
    """Gradients w.r.t. every initial memory, the gate heads and the inputs equal the loop's
    (C = 2, 4)."""
    extra = dict(optimizer=PRESET_OPTIMIZER) if preset else {}
    level = SelfModifyingLevel(chunk_other=2, chunk_memory=4, normalize_value=normalize_value,
                               **extra)
    params = _params(level, 3)
    xs = _inputs(4, 4)

    def f_scan(p, xq, xk, xv):
        o, st = self_modifying_scan(level, p, level.init_state(p, B), xq, xk, xv)
        return jnp.sum(jnp.sin(o)) + sum(jnp.sum(jnp.tanh(a)) for a in jax.tree.leaves(st.memories))

    def f_loop(p, xq, xk, xv):
        o, w, _ = explicit_loop(level, p, xq, xk, xv)
        return jnp.sum(jnp.sin(o)) + sum(jnp.sum(jnp.tanh(a)) for a in jax.tree.leaves(w))

    got = jax.jit(jax.grad(f_scan, argnums=(0, 1, 2, 3)))(params, *xs)
    # eager: compiling the unrolled loop costs more
    want = jax.grad(f_loop, argnums=(0, 1, 2, 3))(params, *xs)
    assert_close(got, want, 1e-10)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(got[0].memories))


@pytest.mark.fast
def test_streaming_split_anywhere_equals_one_call(x64):
    """Two calls with the carried state (split mid-chunk and at a C_mem boundary) equal one call."""
    level = SelfModifyingLevel(chunk_other=2, chunk_memory=4)
    params = _params(level)
    xs = _inputs(13)
    o, s = self_modifying_scan(level, params, level.init_state(params, B), *xs)
    for cut in (4, 7):
        o1, s1 = self_modifying_scan(level, params, level.init_state(params, B),
                                     *[x[:, :cut] for x in xs])
        o2, s2 = self_modifying_scan(level, params, s1, *[x[:, cut:] for x in xs])
        assert_close(jnp.concatenate([o1, o2], 1), o, 1e-10, f"outputs, cut {cut}")
        assert_close((s2.memories, s2.momenta, s2.snapshots), (s.memories, s.momenta, s.snapshots),
                     1e-10, f"state, cut {cut}")


@pytest.mark.fast
def test_frozen_gates_leave_memories_unchanged(x64):
    """η ≈ 0 and α ≈ 1 (gate biases far out): states never change; outputs are M_out,0(q) (design
    §6.9, check 4)."""
    level = SelfModifyingLevel(chunk_other=2, chunk_memory=4)
    params = _params(level)
    g = params.gates
    params = params._replace(gates=g._replace(w_eta=0 * g.w_eta, b_eta=g.b_eta - 80.0,
                                              w_alpha=0 * g.w_alpha, b_alpha=g.b_alpha + 80.0))
    xs = _inputs(9)
    o, state = self_modifying_scan(level, params, level.init_state(params, B), *xs)
    assert_close(state.memories, level.init_state(params, B).memories, 1e-12)
    q = xs[0] / jnp.sqrt(jnp.sum(xs[0] ** 2, -1, keepdims=True) + 1e-6)
    assert_close(o, core.multi_head_apply(level.out_memory, params.memories["out"], q), 1e-12)


@pytest.mark.fast
def test_config_errors():
    """C_mem not a multiple of C_oth, non-canonical optimizers and unknown switches raise."""
    with pytest.raises(ValueError, match="must be a multiple of chunk_other"):
        SelfModifyingLevel(chunk_other=3, chunk_memory=8)
    odd = core.chain(core.scale_by_step_size(), core.add_retention(), core.trace_momentum())
    with pytest.raises(ValueError, match="canonical order"):
        SelfModifyingLevel(optimizer=odd)
    with pytest.raises(ValueError, match="out_target"):
        SelfModifyingLevel(out_target="both")
    level = SelfModifyingLevel(chunk_other=2, chunk_memory=4)
    params = level.init_params(jax.random.PRNGKey(0), H, D)
    x = jnp.ones((B, 5, H, D))
    with pytest.raises(ValueError, match="xq must have shape"):
        self_modifying_scan(level, params, level.init_state(params, B), x[:, :4], x, x)
    with pytest.raises(ValueError, match="expected \\[B, H\\]"):
        self_modifying_scan(level, params, level.init_state(params, B + 1), x, x, x)


def test_ablation_switches_change_only_their_part(x64):
    """DGD off equals the plain-GD path (`momentum_gd` with normalisation); momentum off equals a
    level whose optimizer has no momentum; the switches are the optimizer choice (D14)."""
    base = SelfModifyingLevel(chunk_other=2, chunk_memory=4)
    xs = _inputs(5)
    no_dgd = dataclasses.replace(base, optimizer=core.momentum_gd(normalize=True))
    no_mom = dataclasses.replace(base, optimizer=core.dgd(momentum=False))
    params = _params(base)
    o_base = self_modifying_scan(base, params, base.init_state(params, B), *xs)[0]
    for variant in (no_dgd, no_mom):
        o = self_modifying_scan(variant, params, variant.init_state(params, B), *xs)[0]
        assert float(jnp.max(jnp.abs(o - o_base))) > 1e-6
        o_ref = explicit_loop(variant, params, *xs)[0]
        assert_close(o, o_ref, 1e-10)


@pytest.mark.fast
def test_normalize_value_makes_targets_scale_free(x64):
    """normalize_value: v = L2Norm(x̃_v) when v is static, so scaling the v-path by 5 changes
    nothing (outputs and states, up to L2Norm's ε); without it the targets M_□(v) and hence
    everything change."""
    xs = _inputs(7)
    big = [xs[0], xs[1], 5.0 * xs[2]]
    for nv in (True, False):
        level = SelfModifyingLevel(chunk_other=2, chunk_memory=4, adaptive_v=False,
                                   normalize_value=nv)
        params = _params(level)
        o, s = self_modifying_scan(level, params, level.init_state(params, B), *xs)
        o5, s5 = self_modifying_scan(level, params, level.init_state(params, B), *big)
        if nv:
            # equal up to the ε = 1e-6 inside L2Norm (relative ~ε/‖x̃_v‖²)
            assert_close(o5, o, 1e-5, "outputs")
            assert_close(s5.memories, s.memories, 1e-5, "memories")
        else:
            assert float(jnp.max(jnp.abs(o5 - o))) > 1e-3


def test_normalize_value_keeps_memories_bounded():
    """The measured divergence (docs/hope.md): at η_max = 0.1 with D19's gates and a v-path of norm
    ~3, the unnormalised target path feeds back and the memories overflow within 256 tokens;
    unit-norm values keep every weight and output bounded."""
    outs = {}
    for nv in (False, True):
        level = SelfModifyingLevel(chunk_other=4, chunk_memory=8, eta_max=0.1, normalize_value=nv)
        params = level.init_params(jax.random.PRNGKey(0), 2, 16)
        ks = jax.random.split(jax.random.PRNGKey(7), 3)
        xs = [jax.nn.silu(3.0 * jax.random.normal(k, (1, 256, 2, 16))) for k in ks]
        scan = jax.jit(lambda p, *x: self_modifying_scan(level, p, level.init_state(p, 1), *x))
        o, s = scan(params, *xs)
        outs[nv] = (o, max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(s.memories)))
    assert not bool(jnp.all(jnp.isfinite(outs[False][0])))
    assert bool(jnp.all(jnp.isfinite(outs[True][0])))
    assert float(jnp.max(jnp.abs(outs[True][0]))) < 10.0 and outs[True][1] < 10.0
