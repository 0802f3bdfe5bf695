"""DecoderConfig.scan_blocks: the stacked, nnx.scan-ned blocks compute the unrolled model
(logits, gradients, prefill + steps), with block remat too."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import layers
from hope_jax.models import Decoder, get_config
from hope_jax.models.decoder import stack_blocks


def _pair(**overrides):
    """An unrolled 2-block Titans LMM and the scanned model holding the same weights."""
    cfg = get_config("titans_lmm", "tiny", num_blocks=2, **overrides)
    unrolled = Decoder(cfg, rngs=nnx.Rngs(0))
    scanned = Decoder(dataclasses.replace(cfg, scan_blocks=True), rngs=nnx.Rngs(1))
    nnx.update(scanned.blocks, stack_blocks(unrolled.blocks))
    scanned.embed[...] = unrolled.embed[...]
    nnx.update(scanned.norm, nnx.state(unrolled.norm))
    nnx.update(scanned.lm_head, nnx.state(unrolled.lm_head))
    return unrolled, scanned


def _loss(model, tokens):
    logits = model(tokens)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits


def test_scanned_blocks_equal_unrolled_with_gradients_and_decoding():
    """Logits and every parameter gradient equal the unrolled model's (block remat on), and
    prefill + steps of the scanned model equal its forward."""
    unrolled, scanned = _pair(remat="block")
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 11), 0, 256)
    grad = nnx.jit(nnx.value_and_grad(_loss, has_aux=True))
    ((l_u, full), g_u), ((l_s, logits_s), g_s) = grad(unrolled, tokens), grad(scanned, tokens)
    np.testing.assert_allclose(l_s, l_u, rtol=1e-5)
    np.testing.assert_allclose(logits_s, full, atol=1e-5, rtol=1e-5)
    want = jax.tree.map(lambda *xs: jnp.stack(xs), *(g_u.blocks[i] for i in range(2)))
    assert len(jax.tree.leaves(g_s.blocks)) == len(jax.tree.leaves(want)) > 0
    for a, b in zip(jax.tree.leaves(g_s.blocks), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(g_s.embed[...], g_u.embed[...], atol=1e-6, rtol=1e-4)
    logits, cache = nnx.jit(lambda m, t: m.prefill(t, 16))(scanned, tokens[:, :6])
    step = nnx.jit(lambda m, t, c: m.step(t, c))
    outs = [logits]
    for i in range(6, 11):
        lg, cache = step(scanned, tokens[:, i], cache)
        outs.append(lg[:, None])
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.fast
def test_scan_blocks_metadata_and_errors():
    """Stacked parameters keep one logical axis per dimension (the block axis replicated); a
    hybrid pattern cannot be scanned."""
    cfg = get_config("transformer", "tiny", scan_blocks=True)
    model = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
    for _, var in nnx.iter_graph(model.blocks):
        if isinstance(var, nnx.Param):
            names = var.get_metadata()["logical_axes"]
            assert len(names) == len(var.get_value().shape) and names[0] is None
    with pytest.raises(ValueError, match="identical blocks"):
        dataclasses.replace(cfg, mixers=(layers.AttentionConfig(num_heads=4),
                                         layers.titans_lmm(4)))
