"""Recurrent decoding: prefill + single-token steps equal the full forward for every mixer kind,
the step compiles once for every position, its state has a fixed size (ring buffer for sliding
windows), and a memory layer's step does not cost a whole chunk."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import layers
from hope_jax.layers.cms import CMSConfig, CMSLevel
from hope_jax.layers.mlp import SwiGLUConfig
from hope_jax.layers.self_modifying import SelfModifyingConfig
from hope_jax.models import Decoder, DecoderConfig

D, H, V = 32, 2, 64

# every kind of decode state: ring-buffered SWA with a persistent prefix, attention + memory
# (MAG), a linear level, the self-modifying mixer, in-context CMS levels (sequential and
# independent); odd chunk sizes so prefill and steps cross chunk boundaries. Every mixer alone is
# checked the same way in tests/layers/test_mixers.py and test_hope.py.
MIXERS = (
    layers.AttentionConfig(num_heads=H, window=3, num_persistent=2),
    layers.titans_mag(H, window=4, chunk_size=3, eta_bias=-4.0),
    layers.gated_deltanet(H, chunk_size=5),
    SelfModifyingConfig(num_heads=H, chunk_other=2, chunk_memory=6, eta_max=0.01),
)
MLPS = (CMSConfig(levels=(CMSLevel(chunk=3, eta_max=0.01), CMSLevel(period=2)), hidden=32),
        CMSConfig(levels=(CMSLevel(chunk=5, eta_max=0.01), CMSLevel(chunk=2, eta_max=0.01)),
                  variant="independent", hidden=32))


def _model(mixers=MIXERS, mlps=MLPS):
    cfg = DecoderConfig(vocab_size=V, d_model=D, num_blocks=len(mixers), mixers=mixers, mlp=mlps,
                        max_len=32)
    return Decoder(cfg, rngs=nnx.Rngs(0))


def _pure(model):
    """Pure jitted forward / prefill / step over the model's split state (one cache per
    function)."""
    graphdef, params = nnx.split(model)
    full = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))
    prefill = jax.jit(lambda p, t: nnx.merge(graphdef, p).prefill(t, 32))
    step = jax.jit(lambda p, t, c: nnx.merge(graphdef, p).step(t, c))
    return params, full, prefill, step


def _decode(params, prefill, step, tokens, t0):
    logits, cache = prefill(params, tokens[:, :t0])
    outs, shapes = [logits], jax.tree.map(jnp.shape, cache)
    for i in range(t0, tokens.shape[1]):
        lg, cache = step(params, tokens[:, i], cache)
        assert jax.tree.map(jnp.shape, cache) == shapes, "the decode state must not grow"
        outs.append(lg[:, None])
    return np.asarray(jnp.concatenate(outs, axis=1))


def test_prefill_then_steps_equals_forward_for_every_mixer_kind():
    """Prefill at odd lengths, then steps across chunk boundaries and ring wrap-arounds, equals the
    full forward (1e-5) in a hybrid holding every mixer kind and in-context CMS levels; the step
    compiles once and is reused for every position."""
    model = _model()
    params, full, prefill, step = _pure(model)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 17), 0, V)
    want = np.asarray(full(params, tokens))
    assert np.all(np.isfinite(want))
    got = _decode(params, prefill, step, tokens, 5)  # the rings (window 3 / 4) wrap in prefill
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert step._cache_size() == 1, "step must compile once for every position"


@pytest.mark.fast
def test_sliding_window_cache_is_a_ring_of_window_slots():
    """With a window w the KV cache holds w slots whatever max_len, and decoding a context many
    times longer than w (prefill longer than w, then steps) equals the full forward."""
    w = 3
    attn = layers.AttentionConfig(num_heads=H, window=w).build(D, rngs=nnx.Rngs(1))
    assert attn.init_state(2, 1000).k.shape == (2, w, H, D // H)
    u = jax.random.normal(jax.random.PRNGKey(2), (2, 13, D))
    want = np.asarray(attn(u)[0])
    step = nnx.jit(lambda m, x, s: m(x, s))
    for t0 in (2, 8):
        y, state = step(attn, u[:, :t0], attn.init_state(2, 1000))
        outs = [y]
        for i in range(t0, u.shape[1]):
            y, state = step(attn, u[:, i:i + 1], state)
            outs.append(y)
        np.testing.assert_allclose(np.concatenate(outs, 1), want, atol=1e-5, rtol=1e-5)
        # slot j holds the (rotated) key of the latest position ≡ j (mod w)
        t = u.shape[1]
        pos = jnp.arange(t, dtype=jnp.int32)
        k = layers.apply_rope(attn.w_k(u).reshape(2, t, H, D // H), pos, 10000.0)
        for i in range(t - w, t):
            np.testing.assert_allclose(state.k[:, i % w], k[:, i], atol=1e-6)
        assert int(state.position) == t


def _step_flops(mixer_config, mlp_config=SwiGLUConfig(hidden=32)) -> float:
    model = _model((mixer_config,), (mlp_config,))
    params, _, prefill, step = _pure(model)
    _, cache = jax.eval_shape(prefill, params, jnp.zeros((1, 5), jnp.int32))  # shapes only
    cost = step.lower(params, jnp.zeros((1,), jnp.int32), cache).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


@pytest.mark.parametrize("make", [
    lambda c: (layers.titans_lmm(H, chunk_size=c), SwiGLUConfig(hidden=32)),
    lambda c: (SelfModifyingConfig(num_heads=H, chunk_other=c, chunk_memory=4 * c),
               CMSConfig(levels=(CMSLevel(chunk=c),), hidden=32)),
], ids=["titans_lmm", "hope"])
def test_step_cost_does_not_grow_with_the_chunk(make):
    """A decode step runs one token against the carried snapshot, not a padded chunk: its compiled
    FLOP count is the same at chunk 4 and chunk 64 (a chunk-sized step would cost ~16× more)."""
    small, large = _step_flops(*make(4)), _step_flops(*make(64))
    assert large <= 1.05 * small, (small, large)
