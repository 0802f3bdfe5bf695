"""The memory mixers run their chunked scan through the kernels API (`implementation=`).

For every mixer kind an op covers, the layer's outputs, its final state (a prefill of odd length
from a fresh state) and every parameter gradient are the same (float32, 1e-5 relative)
whichever implementation runs ("reference", "xla", "interpret") and equal to the previous core
path (`core.chunked_scan` with the method pinned). `auto` on CPU is xla; an explicit "pallas_tpu"
on CPU raises; a decoder built from the mixers takes one identical training step.
"""
import dataclasses
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hope_jax import layers
from hope_jax.kernels import _dispatch
from hope_jax.layers.memory_mixer import kernel_route
from hope_jax.models import Decoder
from hope_jax.models.decoder import DecoderConfig

D, H, C = 32, 2, 8  # d_head 16; C a multiple of 8 (the TPU kernel's tiling, also interpreted)
IMPLS = ("reference", "xla", "interpret")

# The Titans factory's curvature-normalised, dampened step has no kernel (it falls back to the
# core, tested below); the op covers Titans' plain momentum step.
PLAIN_STEP = dict(normalize=False, momentum_dampening=False)

CASES = {  # kind → (mixer config, the op that should run it)
    "linear_attention": (layers.linear_attention(H, chunk_size=C), "linear"),
    "deltanet": (layers.deltanet(H, chunk_size=C), "linear"),
    "gated_deltanet": (layers.gated_deltanet(H, chunk_size=C), "linear"),
    "ttt_linear": (layers.ttt_linear(H, chunk_size=C), "linear"),
    "ttt_mlp": (layers.ttt_mlp(H, chunk_size=C, memory_expansion=2.0), "mlp"),
    "titans_lmm": (layers.titans_lmm(H, chunk_size=C, memory_expansion=2.0, num_persistent=0,
                                     **PLAIN_STEP), "mlp"),
}


def core_path(cfg):
    """The mixer as before the kernels API: core.chunked_scan with the auto path pinned."""
    return dataclasses.replace(cfg, method="linear" if cfg.memory == "matrix" else "closed_form")


def close(got, want, tol=1e-5, what=""):
    for path, (a, b) in zip(jax.tree_util.tree_leaves_with_path(want),
                            zip(jax.tree.leaves(got), jax.tree.leaves(want))):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (what, path[0])
        err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30) if b.size else 0.0
        assert err <= tol, f"{what} {jax.tree_util.keystr(path[0])}: rel err {err:.2e}"


def run_mixer(cfg, u):
    """jit: (training y, parameter gradients, prefill y and state)."""
    graph, params, rest = nnx.split(cfg.build(D, rngs=nnx.Rngs(0)), nnx.Param, ...)
    probe = jnp.cos(jnp.arange(u.size // D * D, dtype=jnp.float32)).reshape(u.shape)

    @jax.jit
    def f(params, rest, u):
        def loss(params):
            y, _ = nnx.merge(graph, params, rest)(u)
            return jnp.sum(jnp.sin(y) * probe), y

        (_, y), grads = jax.value_and_grad(loss, has_aux=True)(params)
        m = nnx.merge(graph, params, rest)
        return y, grads, m(u, m.init_state(u.shape[0]))

    return f(params, rest, u)


_CORE = {}


def core_result(kind):
    if kind not in _CORE:
        cfg = core_path(CASES[kind][0])
        assert kernel_route(cfg)[0] is None
        _CORE[kind] = run_mixer(cfg, U)
    return _CORE[kind]


U = jax.random.normal(jax.random.PRNGKey(1), (2, 19, D))  # T = 19: two chunks and an odd tail


# The kernel ("interpret") for every kind; the core's own reference / xla paths through the op API
# for one linear and one MLP kind (all 18 pass; the full grid costs ~2.5 CPU-minutes).
GRID = ([(kind, "interpret") for kind in CASES]
        + [(kind, impl) for kind in ("gated_deltanet", "titans_lmm")
           for impl in ("reference", "xla")])


@pytest.mark.parametrize("kind, impl", GRID)
def test_mixer_identical_whichever_implementation(kind, impl):
    """Outputs, final state and parameter gradients equal the core path's for reference, xla and
    interpret (the prefill with state out runs the op on the whole chunks, the core on the tail)."""
    cfg, op = CASES[kind]
    assert kernel_route(cfg) == (op, "")
    assert kernel_route(dataclasses.replace(cfg, gradient="stop"))[0] is None  # D8 stop: core
    got = run_mixer(dataclasses.replace(cfg, implementation=impl), U)
    close(got, core_result(kind), 1e-5, f"{kind}/{impl}")


@pytest.mark.fast
def test_auto_on_cpu_resolves_to_xla(monkeypatch):
    """`auto` on CPU resolves to "xla" (no warning), and a covered mixer calls the op's xla path."""
    assert _dispatch.backend_platform() == "cpu"
    assert _dispatch.resolve_implementation("auto", lambda name: None, "op") == "xla"
    calls = []
    for op in ("linear", "mlp"):
        mod = sys.modules[f"hope_jax.kernels.{op}_chunk_update.api"]
        name = f"{op}_chunk_update_xla"
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name,
                            lambda *a, _r=real, _op=op, **kw: calls.append(_op) or _r(*a, **kw))
    u = jnp.ones((1, 11, D))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in ("gated_deltanet", "titans_lmm"):
            m = CASES[kind][0].build(D, rngs=nnx.Rngs(0))
            jax.eval_shape(lambda x: m(x)[0], u)
    assert calls == ["linear", "mlp"]


def test_explicit_pallas_tpu_on_cpu_raises():
    """An explicit compiled kernel that cannot run here raises ValueError naming the reason;
    an unknown implementation is rejected by the config."""
    u = jnp.ones((1, 11, D))
    for kind in ("deltanet", "titans_lmm"):
        cfg = dataclasses.replace(CASES[kind][0], implementation="pallas_tpu")
        m = cfg.build(D, rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match="pallas_tpu.*TPU backend"):
            jax.eval_shape(lambda x: m(x)[0], u)
    with pytest.raises(ValueError, match="implementation must be one of"):
        layers.deltanet(H, implementation="triton")


def test_uncovered_levels_fall_back_to_the_core():
    """The configurations no op covers route to core.chunked_scan (docs/kernels.md table), and an
    explicit implementation does not affect them."""
    uncovered = {
        "matrix + momentum": layers.titans_lmm(H, memory="matrix"),
        "method pinned": layers.deltanet(H, method="generic"),
        "depth-3 MLP": layers.titans_lmm(H, memory_depth=3),
        "MLP gated DGD": layers.titans_lmm(H, delta=True, gated=True),
        "gated DGD, no retention": layers.deltanet(H, gated=True),
        "MLP remat=False": layers.titans_lmm(H, remat=False),
        "curvature-normalised step": layers.titans_lmm(H, momentum_dampening=False),
        "dampened momentum": layers.titans_lmm(H, normalize=False),
    }
    for what, cfg in uncovered.items():
        op, why = kernel_route(cfg)
        assert op is None and why, what
    m = dataclasses.replace(uncovered["matrix + momentum"], implementation="pallas_tpu",
                            chunk_size=C).build(D, rngs=nnx.Rngs(0))
    assert jax.eval_shape(lambda x: m(x)[0], jnp.ones((1, 11, D))).shape == (1, 11, D)


def test_decoder_trains_one_step_identically():
    """A decoder of Gated DeltaNet and Titans MAL blocks (persistent tokens, odd T): one SGD step
    gives the same loss, gradients and parameters with the interpreted kernels as on the core
    path. (SGD, not Adam: Adam's first step is ≈ lr·sign(g), which turns float32 round-off in
    near-zero gradients into O(lr) differences.)"""
    mixers = (layers.gated_deltanet(H, chunk_size=C),
              layers.titans_mal(H, window=5, num_persistent=3, chunk_size=C,
                                memory_expansion=2.0, **PLAIN_STEP))

    def with_memory(cfg, fn):
        if isinstance(cfg, layers.MemoryMixerConfig):
            return fn(cfg)
        return dataclasses.replace(cfg, memory=fn(cfg.memory))

    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 13), 0, 64)
    tx = optax.sgd(0.1)
    results = []
    for fn in (core_path, lambda c: dataclasses.replace(c, implementation="interpret")):
        cfg = DecoderConfig(vocab_size=64, d_model=D, num_blocks=2, max_len=16,
                            mixers=tuple(with_memory(m, fn) for m in mixers))
        graph, params, rest = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)

        @jax.jit
        def step(params, rest, tokens):
            def loss(params):
                logits = nnx.merge(graph, params, rest)(tokens[:, :-1])
                return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                                     tokens[:, 1:, None], -1))

            value, grads = jax.value_and_grad(loss)(params)
            updates, _ = tx.update(grads, tx.init(params), params)
            return value, grads, optax.apply_updates(params, updates)

        results.append(step(params, rest, tokens))
    close(results[1], results[0], 1e-5, "decoder step")
