"""Hope and Hope-Attention: the self-modifying mixer and the CMS inside the decoder (design §5,
§6.6)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import core
from hope_jax.layers.cms import CMSConfig, CMSLevel, update_periods
from hope_jax.models.presets import hope_config, with_switches
from hope_jax.layers.mlp import SwiGLUConfig
from hope_jax.layers.self_modifying import SelfModifyingConfig
from hope_jax.models import Decoder, get_config
from hope_jax.models.param_count import abstract_model, count_params


@pytest.fixture(scope="module")
def one_block_hope():
    """A tiny Hope (one block, d = 64, 4 heads, C_oth = 4, C_mem = 8) and a token batch."""
    model = Decoder(get_config("hope", "tiny", num_blocks=1), rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 21), 0, 256)
    return model, tokens


def test_prefill_then_steps_equals_full_forward(one_block_hope):
    """Prefill of 9 tokens (mid-chunk) then single-token steps reproduce the full forward."""
    model, tokens = one_block_hope
    full = nnx.jit(lambda m, t: m(t))(model, tokens)
    logits, cache = nnx.jit(lambda m, t: m.prefill(t))(model, tokens[:, :9])
    step = nnx.jit(lambda m, t, c: m.step(t, c))
    outs = [logits]
    for t in range(9, tokens.shape[1]):
        out, cache = step(model, tokens[:, t], cache)
        outs.append(out[:, None])
    got = jnp.concatenate(outs, axis=1)
    assert float(jnp.max(jnp.abs(got - full))) <= 1e-5 * float(jnp.max(jnp.abs(full)))


def test_causality(one_block_hope):
    """Changing the token at position t changes no logit before t."""
    model, tokens = one_block_hope
    fwd = nnx.jit(lambda m, t: m(t))
    base = fwd(model, tokens)
    for t in (5, 13):
        changed = fwd(model, tokens.at[:, t].set((tokens[:, t] + 7) % 256))
        assert float(jnp.max(jnp.abs(changed[:, :t] - base[:, :t]))) == 0.0
        assert float(jnp.max(jnp.abs(changed[:, t:] - base[:, t:]))) > 0.0


@pytest.mark.fast
def test_cms_single_outer_level_is_a_swiglu():
    """CMS with one outer level of period 1 equals a SwiGLU with the same weights (design §5.7,
    check 1), and the independent variant with K = 1 (w = 1) equals the sequential one (check 7)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 64))
    seq = CMSConfig(levels=(CMSLevel(period=1),), hidden=96).build(64, rngs=nnx.Rngs(0))
    ind = CMSConfig(levels=(CMSLevel(period=1),), hidden=96, variant="independent").build(
        64, rngs=nnx.Rngs(0))
    mlp = SwiGLUConfig(hidden=96).build(64, rngs=nnx.Rngs(0))
    want = mlp(x)[0]
    np.testing.assert_allclose(seq(x)[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ind(x)[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.fast
def test_update_periods_label_outer_levels():
    """Outer CMS levels' parameters carry their period; everything else updates every step."""
    model = Decoder(get_config("hope", "tiny"), rngs=nnx.Rngs(0))
    periods = update_periods(model)
    flat = {tuple(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(periods)[0]}
    assert sorted(set(flat.values())) == [1, 2, 8]
    for path, v in flat.items():
        if "levels" in path:
            level = int(path[path.index("levels") + 1])
            assert v == (1, 2, 8)[level], path
        else:
            assert v == 1, path


@pytest.mark.fast
def test_ablation_switches_reach_the_core():
    """Each Table-6 switch (D14) selects the documented inner update or block (no compile)."""
    base = hope_config("hope", "tiny").mixers[0]
    assert core.inner_optimizers.recurrence_spec(base.level().optimizer).dgd
    spec = lambda **kw: core.inner_optimizers.recurrence_spec(
        dataclasses.replace(base, **kw).level().optimizer)
    assert not spec(dgd=False).dgd and spec(dgd=False).momentum_slot is not None
    assert spec(momentum=False).momentum_slot is None and spec(momentum=False).dgd
    assert not spec(retention=False).retention
    assert dataclasses.replace(base, objective="dot").level().objective.name == "dot"
    assert "k" not in dataclasses.replace(base, adaptive_k=False).level().memory_names
    assert "v" not in dataclasses.replace(base, adaptive_v=False).level().memory_names
    assert "q" in dataclasses.replace(base, adaptive_q=True).level().memory_names
    assert isinstance(hope_config("hope", "tiny", cms=False).mlp, SwiGLUConfig)
    assert not with_switches(hope_config("hope", "tiny"), dgd=False).mixers[0].dgd
    with pytest.raises(ValueError, match="unknown Hope switches"):
        hope_config("hope", "tiny", attention=True)


@pytest.mark.fast
def test_hope_attention_without_cms_is_transformer_pp():
    """Hope-Attention with the CMS reduced to one plain MLP is the Transformer++ config (design
    §6.9, check 9)."""
    a = hope_config("hope_attention", "tiny", cms=False)
    b = get_config("transformer", "tiny")
    assert dataclasses.replace(a, name="") == dataclasses.replace(b, name="")


@pytest.mark.parametrize("size, target", [("340m", 340e6), ("760m", 760e6), ("1.3b", 1.3e9)])
def test_paper_size_parameter_counts(size, target):
    """Hope presets built abstractly (nothing allocated) are within ±10% of their names. Built
    with scan_blocks (one traced block, the same parameter count: tests/models/test_scan_blocks.py)
    — 0.2 s instead of 15 s at 1.3B."""
    config = dataclasses.replace(get_config("hope", size), scan_blocks=True)
    n = count_params(abstract_model(config))
    assert abs(n - target) <= 0.1 * target, f"{size}: {n / 1e6:.1f}M"


@pytest.mark.fast
def test_bad_configs_raise():
    with pytest.raises(ValueError, match="must be a multiple of chunk_other"):
        SelfModifyingConfig(num_heads=4, chunk_other=3, chunk_memory=8)
    with pytest.raises(ValueError, match="out_memory must be 'mlp' or 'matrix', got 'deep'"):
        SelfModifyingConfig(num_heads=4, out_memory="deep")
    with pytest.raises(ValueError, match="CMSLevel.scan_group must be a positive int"):
        CMSLevel(chunk=4, scan_group=0)
    with pytest.raises(ValueError, match="exactly one of chunk"):
        CMSLevel(chunk=4, period=2)
    with pytest.raises(ValueError, match="unknown arch"):
        get_config("hopeful", "tiny")
