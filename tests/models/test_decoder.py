"""The decoder LM: shapes, causality, prefill + steps == full forward, hybrids, tying, mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import layers, sharding
from hope_jax.models import Decoder, DecoderConfig, count_params, get_config, parse_pattern

B, T, T0 = 2, 12, 7


@nnx.jit
def _logits(model, tokens):
    return model(tokens)


@nnx.jit(static_argnums=(2,))
def _prefill(model, tokens, max_len):
    return model.prefill(tokens, max_len)


@nnx.jit
def _step(model, token, cache):
    return model.step(token, cache)


def _tiny(arch, **kw):
    cfg = get_config(arch, "tiny", **kw)
    return Decoder(cfg, rngs=nnx.Rngs(0)), cfg


def _tokens(seed=0, t=T):
    return jax.random.randint(jax.random.PRNGKey(seed), (B, t), 0, 256)


def _check_lm(model, cfg):
    tokens = _tokens()
    t = 5
    perturbed = tokens.at[:, t].set((tokens[:, t] + 1) % 256)
    both = np.asarray(_logits(model, jnp.concatenate([tokens, perturbed])))
    logits, logits2 = both[:B], both[B:]
    assert logits.shape == (B, T, cfg.vocab_size) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(logits[:, :t], logits2[:, :t])  # causality
    assert np.abs(logits[:, t:] - logits2[:, t:]).max() > 1e-6
    pre, cache = _prefill(model, tokens[:, :T0], T)
    outs = [np.asarray(pre)]
    for i in range(T0, T):
        lg, cache = _step(model, tokens[:, i], cache)
        outs.append(np.asarray(lg)[:, None])
    np.testing.assert_allclose(np.concatenate(outs, 1), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["transformer", "titans_lmm", "titans_mag"])
def test_lm_shapes_causality_and_prefill_steps(arch):
    _check_lm(*_tiny(arch))


def test_hybrid_pattern_tied_embeddings():
    """"2 deltanet : 1 attention" over 3 blocks, tied LM head: same three properties."""
    table = {"deltanet": layers.deltanet(4, chunk_size=4), "attention": layers.AttentionConfig(4)}
    mixers = parse_pattern("2 deltanet : 1 attention", table)
    assert mixers == (table["deltanet"],) * 2 + (table["attention"],)
    cfg = DecoderConfig(vocab_size=260, d_model=32, num_blocks=3, mixers=mixers,
                        tie_embeddings=True, max_len=T)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    assert model.lm_head is None
    assert [type(b.mixer).__name__ for b in model.blocks] == ["MemoryMixer", "MemoryMixer",
                                                              "Attention"]
    _check_lm(model, cfg)


@pytest.mark.fast
def test_pattern_errors():
    with pytest.raises(ValueError, match="bad pattern"):
        parse_pattern("2 nope", {"a": 1})
    with pytest.raises(ValueError, match="unknown arch"):
        get_config("nope", "tiny")


@pytest.mark.fast
@pytest.mark.parametrize("arch", ["transformer", "titans_lmm", "titans_mag", "titans_mal",
                                  "linear_attention", "deltanet", "gated_deltanet",
                                  "ttt_linear", "ttt_mlp"])
@pytest.mark.parametrize("size", ["tiny", "small"])
def test_preset_shapes_abstract(arch, size):
    """Every CPU preset builds abstractly; logits have shape [B, T, V] (eval_shape, no FLOPs)."""
    cfg = get_config(arch, size)
    out = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))(
        jnp.zeros((2, cfg.max_len), jnp.int32)))
    assert out.shape == (2, cfg.max_len, cfg.vocab_size) and out.dtype == jnp.float32


def test_model_on_a_mesh_equals_single_device():
    """8 fake devices (data 2 × fsdp 2 × tensor 2): the sharded forward equals the unsharded one."""
    table = {"titans": layers.titans_lmm(4, chunk_size=4), "attention": layers.AttentionConfig(4)}
    cfg = DecoderConfig(vocab_size=264, d_model=32, num_blocks=2,
                        mixers=parse_pattern("1 titans : 1 attention", table), max_len=T)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (4, T), 0, 256)
    want = np.asarray(_logits(Decoder(cfg, rngs=nnx.Rngs(0)), tokens))
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
        model = Decoder(cfg, rngs=nnx.Rngs(0))
        sharding.shard_model(model, mesh)
        emb = model.embed[...]
        assert emb.sharding.spec == jax.P("tensor", "fsdp")
        w_q = model.blocks[1].mixer.w_q.kernel[...]
        assert w_q.sharding.spec == jax.P("fsdp", "tensor")
        batch = jax.device_put(tokens, jax.NamedSharding(mesh, jax.P(("data", "fsdp"))))
        got = np.asarray(_logits(model, batch))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.fast
def test_rules_table():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    spec = sharding.logical_to_mesh_axes(("embed", "mlp"), (64, 128), mesh)
    assert spec == jax.P("fsdp", "tensor")
    # a dimension the mesh axis does not divide is replicated
    assert sharding.logical_to_mesh_axes(("vocab", "embed"), (259, 64), mesh) == jax.P(None, "fsdp")
    assert (sharding.logical_to_mesh_axes(("batch", None), (8, 3), mesh)
            == jax.P(("data", "fsdp"), None))


@pytest.mark.fast
def test_every_param_has_logical_axes():
    model = nnx.eval_shape(lambda: Decoder(get_config("titans_mag", "tiny"), rngs=nnx.Rngs(0)))
    for path, v in jax.tree_util.tree_flatten_with_path(
            nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))[0]:
        axes = v.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == len(v.shape), jax.tree_util.keystr(path)
        assert all(a is None or a in sharding.LOGICAL_AXIS_RULES for a in axes)
    assert count_params(model) > 0
