"""Activation sharding constraints at block boundaries (sharding.rules.constrain in the decoder):
on 8 fake CPU devices the loss equals one device's, and the constraints are in the program."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hope_jax import sharding
from hope_jax.models.decoder import Decoder
from hope_jax.models.presets import get_config
from hope_jax.sharding.rules import constrain


def _loss(model: Decoder, tokens: jax.Array) -> jax.Array:
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def test_constrained_loss_on_8_devices_equals_one_device():
    assert jax.device_count() == 8
    cfg = get_config("transformer", "tiny", num_blocks=1, max_len=16)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (8, 17), 0, cfg.vocab_size)
    x = jnp.ones((8, 16, 64))
    assert constrain(x) is x                                   # no mesh in context: no-op
    want = float(jax.jit(_loss)(Decoder(cfg, rngs=nnx.Rngs(0)), tokens))
    spec = '[{"data", "fsdp"}, {"sequence"}, {}]'                # h [B, T, d]
    for axes in ({"data": 2, "fsdp": 2, "tensor": 2}, {"data": 2, "sequence": 4}):
        mesh = sharding.make_mesh(axes)
        with jax.set_mesh(mesh):
            model = sharding.shard_model(Decoder(cfg, rngs=nnx.Rngs(0)), mesh)
            batch = jax.device_put(tokens, jax.NamedSharding(mesh, jax.P(("data", "fsdp"))))
            text = jax.jit(_loss).lower(model, batch).as_text()
            got = float(jax.jit(_loss)(model, batch))
        assert text.count("sdy.sharding_constraint") >= 3 and spec in text, axes  # embed, 2 adds
        np.testing.assert_allclose(got, want, rtol=1e-5)
