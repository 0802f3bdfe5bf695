"""`model.remat = "full"`: the training forward reads the sequence a segment at a time with the
recurrent state carried, and recomputes one segment at a time in the backward. Same loss and
gradients as without remat; less compiled memory; a segment that is not whole chunks is refused."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hope_jax.models.decoder import Decoder
from hope_jax.models.presets import get_config


def _loss(model: Decoder, tokens: jax.Array) -> jax.Array:
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


@pytest.mark.parametrize("arch", ["hope", "titans_lmm", "titans_mac"])
def test_full_remat_has_the_loss_and_gradients_of_no_remat(arch):
    """Tiny Hope (segments in fresh form: every boundary a whole C_mem and CMS chunk; two blocks,
    so each segment carries several blocks' states), Titans LMM (persistent tokens: the memory
    streams from its prefix) and Titans MAC (MAC segments of 16: cut at their boundaries, where
    its positions restart), T = 48 in segments of 16 and the automatic T/4 = 12 where that is
    whole chunks. The Titans run one block: a shorter compile, the same segment paths."""
    t = 48
    cfg = get_config(arch, "tiny", num_blocks=2 if arch == "hope" else 1, max_len=t)
    if arch == "titans_mac":
        cfg = dataclasses.replace(cfg, mixers=(dataclasses.replace(cfg.mixers[0], segment=16),))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, t + 1), 0, cfg.vocab_size)
    grad = nnx.jit(nnx.value_and_grad(_loss))
    want, g0 = grad(Decoder(cfg, rngs=nnx.Rngs(0)), tokens)
    segments = (16, 0) if arch == "titans_lmm" else (16,)
    for segment in segments:
        model = Decoder(dataclasses.replace(cfg, remat="full", remat_segment=segment),
                        rngs=nnx.Rngs(0))
        assert model.remat_segment(t) == (segment or 12)
        got, g1 = grad(model, tokens)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
            np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4)


def test_full_remat_lowers_compiled_memory_and_checks_its_segment():
    """Tiny Hope, B 4 × T 128: XLA's compiled temporaries of loss + gradient with remat "full"
    are under half of "block"'s (measured 15.6 vs 40.6 MiB), and with scan_blocks no more than
    unrolled (13.8 MiB: the scanned blocks are remat'd inside each segment too; 22.5 when they
    were not). A segment that is not whole chunks is refused; Titans MAC is cut at its
    segments."""
    cfg = get_config("hope", "tiny", max_len=128)
    tokens = jax.ShapeDtypeStruct((4, 129), jnp.int32)

    def temp_bytes(remat: str, scan_blocks: bool = False) -> int:
        model = nnx.eval_shape(lambda: Decoder(
            dataclasses.replace(cfg, remat=remat, scan_blocks=scan_blocks), rngs=nnx.Rngs(0)))
        graphdef, params = nnx.split(model)
        loss = lambda p, x: _loss(nnx.merge(graphdef, p), x)
        compiled = jax.jit(jax.value_and_grad(loss)).lower(params, tokens).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    block, full = temp_bytes("block"), temp_bytes("full")
    assert full < 0.5 * block, (block, full)
    assert temp_bytes("full", scan_blocks=True) <= full

    bad = Decoder(dataclasses.replace(cfg, remat="full", remat_segment=12), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiple of 8"):
        bad.remat_segment(48)
    mac = nnx.eval_shape(lambda: Decoder(get_config("titans_mac", "tiny", remat="full"),
                                         rngs=nnx.Rngs(0)))
    assert mac.state_alignment() == 64 and mac.remat_segment(256) == 64  # its MAC segments
