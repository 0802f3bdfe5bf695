"""The test-time learner (hope_jax.learn): equal to a hand-written value_and_grad + optimizer loop
(float64), exactly eval at learning rate 0, only the chosen groups change, an orbax round trip,
and clear errors for bad groups."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hope_jax.eval._scoring import target_logprobs
from hope_jax.layers.attention import AttentionConfig
from hope_jax.layers.cms import CMSConfig, CMSLevel
from hope_jax.layers.mlp import SwiGLUConfig
from hope_jax.learn import GroupSpec, LearnConfigError, Learner, parse_groups
from hope_jax.models.decoder import Decoder, DecoderConfig

B, W, V = 2, 16, 16
LEVELS = (CMSLevel(chunk=2, normalize=True), CMSLevel(period=1), CMSLevel(period=2))


def _model(dtype: str = "float64", mlp=None) -> Decoder:
    mlp = mlp or CMSConfig(levels=LEVELS, hidden=16)
    cfg = DecoderConfig(vocab_size=V, d_model=8, num_blocks=1,
                        mixers=(AttentionConfig(num_heads=2),), mlp=mlp, max_len=W,
                        dtype=dtype, param_dtype=dtype)
    return Decoder(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model32() -> Decoder:
    return _model("float32")


def _tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, (B, W + 1)).astype(np.int32)


def _chunk_loss(model, params, pv, thetas, cache, inp, tgt, groups):
    """Σ over rows of each row's mean next-token NLL (rows are independent streams)."""
    from hope_jax.learn.learner import _set_theta
    params = {**params, **pv}
    for (b, i), th in zip(groups, thetas):
        cache = _set_theta(cache, b, i, th)
    m = nnx.merge(model[0], model[1].to_state(params), model[2])
    logits, cache = m.forward(inp, cache)
    nll = -target_logprobs(logits, tgt)
    return nll.mean(axis=1).sum(), (nll, cache)


def _hand_loop(learner, tokens, chunks, txs, names, slots):
    """Per segment: value_and_grad, gradient sums, an optimizer step at each group's chunk end.
    Param groups use the batch-mean loss; the fast-weight group each row's own loss."""
    from hope_jax.learn.learner import _get_theta, _set_theta
    model = (learner.graphdef, learner.codec, learner.rest)
    params = dict(learner.params)
    cache = learner.model(params).init_state(B, slots)
    seg = np.gcd.reduce(chunks)
    opts = [tx.init({n: params[n] for n in ns}) if ns != "fast" else
            tx.init(_get_theta(cache, 0, 0)) for tx, ns in zip(txs, names)]
    accs = [None] * len(txs)
    nlls = []
    fast = [(0, 0)] if "fast" in names else []
    grad_fn = jax.jit(jax.value_and_grad(
        lambda *a: _chunk_loss(model, *a, fast), argnums=(1, 2), has_aux=True))
    for j in range(W // seg):
        inp, tgt = tokens[:, j * seg:(j + 1) * seg], tokens[:, j * seg + 1:(j + 1) * seg + 1]
        pv = {n: params[n] for ns in names if ns != "fast" for n in ns}
        thetas = [_get_theta(cache, 0, 0)] if "fast" in names else []
        (_, (nll, new_cache)), (gp, gt) = grad_fn(params, pv, thetas, cache, inp, tgt)
        nlls.append(nll)
        cache = new_cache
        for k, (tx, ns, c) in enumerate(zip(txs, names, chunks)):
            g = gt[0] if ns == "fast" else {n: gp[n] / B for n in ns}
            accs[k] = g if accs[k] is None else jax.tree.map(jnp.add, accs[k], g)
            if ((j + 1) * seg) % c:
                continue
            mean = jax.tree.map(lambda x: x / (c // seg), accs[k])
            accs[k] = None
            if ns == "fast":
                theta = _get_theta(cache, 0, 0)
                upd, opts[k] = tx.update(mean, opts[k], theta)
                cache = _set_theta(cache, 0, 0, optax.apply_updates(theta, upd))
            else:
                cur = {n: params[n] for n in ns}
                upd, opts[k] = tx.update(mean, opts[k], cur)
                params.update(optax.apply_updates(cur, upd))
    return params, np.concatenate(nlls, axis=1)


def _names(learner, group):
    return [n for n in learner.codec.names if n.startswith(f"blocks/0/mlp/levels/{group}/")]


@pytest.mark.usefixtures("x64")
def test_learner_equals_hand_loop_float64():
    model = _model()
    specs = [GroupSpec(("cms0",), lr=0.05, optimizer="gd"),
             GroupSpec(("cms1",), lr=0.1, optimizer="momentum"),
             GroupSpec(("cms2",), lr=0.05, optimizer="adam")]
    learner = Learner(model, specs, seq_len=4, context_len=None)
    assert [(g.name, g.chunk) for g in learner.groups] == [("cms0", 2), ("cms1", 4), ("cms2", 8)]
    tokens = _tokens()
    state, nll = learner.learn(learner.init(B), tokens)
    names = ["fast", _names(learner, 1), _names(learner, 2)]
    txs = [optax.sgd(0.05), optax.sgd(0.1, momentum=0.9), optax.adam(0.05)]
    params, hand_nll = _hand_loop(learner, jnp.asarray(tokens), [2, 4, 8], txs, names, W)
    # the logits (and the in-context level) are float32 by design: float32 rounding only
    np.testing.assert_allclose(np.asarray(nll), hand_nll, rtol=1e-6, atol=1e-6)
    for n in names[1] + names[2]:
        np.testing.assert_allclose(np.asarray(state.params[n]), np.asarray(params[n]),
                                   rtol=1e-6, atol=1e-7)
        assert not np.allclose(np.asarray(state.params[n]), np.asarray(learner.params[n]))


@pytest.mark.usefixtures("x64")
def test_stop_memory_gradient_is_a_hand_loop_over_stop_mixers():
    """memory_gradient="stop" (the default) on a model with a memory mixer equals the hand loop
    over the same model built with its mixer's writes in stop-gradient mode; "full" learns
    otherwise, from the same scores. (A matrix-memory mixer: the switch is the same for every
    memory config, self-modifying Titans included, and this one compiles in seconds.)"""
    import dataclasses

    from hope_jax.layers.memory_mixer import MemoryMixerConfig
    mixer = MemoryMixerConfig(num_heads=2, memory="matrix", chunk_size=2, momentum=True,
                              retention=True, normalize=True)
    cfg = DecoderConfig(vocab_size=V, d_model=8, num_blocks=2, mixers=(mixer,),
                        mlp=CMSConfig(levels=LEVELS, hidden=16), max_len=W, dtype="float64",
                        param_dtype="float64")
    stop_cfg = dataclasses.replace(cfg, mixers=(dataclasses.replace(mixer, gradient="stop"),))
    specs = [GroupSpec(("cms1",), lr=0.1, optimizer="gd")]  # block 0's reaches the loss
    tokens = _tokens(5)                                      # through block 1's mixer
    runs = {}
    for mode in ("stop", "full"):
        learner = Learner(Decoder(cfg, rngs=nnx.Rngs(0)), specs, seq_len=4, context_len=None,
                          memory_gradient=mode)
        runs[mode] = learner.learn(learner.init(B), tokens)
    stop_learner = Learner(Decoder(stop_cfg, rngs=nnx.Rngs(0)), specs, seq_len=4)
    names = [[n for n in stop_learner.codec.names if "/mlp/levels/1/" in n]]
    params, hand_nll = _hand_loop(stop_learner, jnp.asarray(tokens), [4], [optax.sgd(0.1)],
                                  names, W)
    (stop, stop_nll), (full, full_nll) = runs["stop"], runs["full"]
    np.testing.assert_allclose(np.asarray(stop_nll), hand_nll, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(full_nll[:, :4]), hand_nll[:, :4], rtol=1e-6, atol=1e-6)
    moved = 0.0
    for n in names[0]:
        np.testing.assert_allclose(np.asarray(stop.params[n]), np.asarray(params[n]),
                                   rtol=1e-6, atol=1e-7)
        moved = max(moved, float(np.abs(np.asarray(stop.params[n]) - full.params[n]).max()))
    assert moved > 1e-6  # the writes' gradient is not zero: "full" steps elsewhere


@pytest.mark.usefixtures("x64")
def test_learning_rate_zero_is_eval():
    model = _model()
    learner = Learner(model, [GroupSpec(lr=0.0)], seq_len=4, context_len=None)
    tokens = _tokens(1)
    state, nll = learner.learn(learner.init(B), tokens)
    ref = -target_logprobs(model(jnp.asarray(tokens[:, :-1])), jnp.asarray(tokens[:, 1:]))
    np.testing.assert_allclose(np.asarray(nll), np.asarray(ref), rtol=1e-6, atol=2e-6)  # f32 logits
    for n, p in learner.params.items():
        np.testing.assert_array_equal(np.asarray(state.params[n]), np.asarray(p))
    frozen = Learner(model, [GroupSpec()], seq_len=4, context_len=None, frozen=True)
    _, nll_frozen = frozen.learn(frozen.init(B), tokens)  # forward only: the same numbers
    np.testing.assert_allclose(np.asarray(nll_frozen), np.asarray(nll), rtol=1e-6, atol=2e-6)


def test_only_chosen_groups_change_and_streaming_equals_one_call(model32):
    model = model32
    learner = Learner(model, parse_groups("cms1", lr=0.1), seq_len=4, context_len=8)
    tokens = _tokens(2)
    state, nll = learner.learn(learner.init(B), tokens)
    chosen = set(_names(learner, 1))
    for n, p in learner.params.items():
        same = np.array_equal(np.asarray(state.params[n]), np.asarray(p))
        assert same == (n not in chosen), n
    half = W // 2  # two calls of W/2 tokens (the state passed along) = one call of W
    s1, n1 = learner.learn(learner.init(B), tokens[:, :half + 1])
    s2, n2 = learner.learn(s1, tokens[:, half:])
    np.testing.assert_allclose(np.concatenate([n1, n2], 1), np.asarray(nll), rtol=1e-5,
                               atol=1e-5)
    reset = learner.reset(s2)
    assert int(reset.position) == W and reset.params is s2.params


def test_learned_state_round_trips_through_orbax(tmp_path, model32):
    from hope_jax.config import default_config
    from hope_jax.learn.checkpoint import restore_learned, save_learned
    from hope_jax.train.checkpoint import Checkpointer
    model = model32
    learner = Learner(model, [GroupSpec(optimizer="m3", lr=0.01)], seq_len=4,
                      context_len=None)  # M3's state (fast and slow momenta) round-trips too
    state, _ = learner.learn(learner.init(B), _tokens(3))
    config = default_config()
    step = save_learned(str(tmp_path), state, config=config, vocab_size=V,
                        stream=dict(offset=W))
    assert step == W
    back, stream, rstep = restore_learned(str(tmp_path), learner, B, config=config,
                                          vocab_size=V)
    assert rstep == W and stream == dict(offset=W)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 back, state)
    ckpt = Checkpointer(str(tmp_path), async_save=False)  # what load_for_inference reads
    params = ckpt.restore_params(W, {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                                     for k, v in state.params.items()})
    ckpt.close()
    n = _names(learner, 1)[0]
    np.testing.assert_array_equal(np.asarray(params[n]), np.asarray(state.params[n]))
    # the next window continues identically from the restored state
    a, _ = learner.learn(state, _tokens(4))
    b, _ = learner.learn(back, _tokens(4))
    np.testing.assert_array_equal(np.asarray(a.params[n]), np.asarray(b.params[n]))


@pytest.mark.parametrize("specs, message", [
    ([GroupSpec(("blocks/*/nothing/*",))], "matches no parameter"),
    ([GroupSpec(("cms7",))], "matches no CMS level"),
    ([GroupSpec(("cms1",), chunk=6)], "not a positive multiple of the level's own chunk (4"),
    ([GroupSpec(("cms0",), chunk=3)], "own chunk (2"),
    ([GroupSpec(("cms",), optimizer="lion")], "unknown learn optimizer"),
    ([GroupSpec(("cms1",)), GroupSpec(("re:levels/1/",))], "in two learn groups"),
])
def test_bad_groups_are_named(specs, message, model32):
    with pytest.raises(LearnConfigError, match=message.replace("(", r"\(")):
        Learner(model32, specs, seq_len=4)


def test_per_group_optimizers_from_the_command_line_form(model32):
    specs = parse_groups("cms", chunk="cms2=16", optimizer="cms1=momentum,adam", lr=0.1)
    learner = Learner(model32, specs, seq_len=4, context_len=None)
    assert [(g.name, g.chunk) for g in learner.groups] == [("cms0", 2), ("cms1", 4), ("cms2", 16)]
    with pytest.raises(LearnConfigError, match="unknown learn optimizer 'lion'"):
        Learner(model32, parse_groups("cms", optimizer="cms1=lion"), seq_len=4)
    with pytest.raises(LearnConfigError, match="expected NAME=int"):
        parse_groups("cms", chunk="cms1=big")


def test_model_without_learnable_level():
    model = _model("float32", mlp=SwiGLUConfig())
    with pytest.raises(LearnConfigError, match="no learnable level"):
        Learner(model)
    learner = Learner(model, parse_groups("mlp", chunk="4"), seq_len=4)  # by logical name
    assert learner.groups[0].params and all("mlp" in n for n in learner.groups[0].params)
    assert learner.context_len == 4  # attention: the KV cache restarts every T tokens
