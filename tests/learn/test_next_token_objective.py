"""The training-time next-token CMS objective (hope_jax.learn.next_token_objective, NL Sec. 7.1):
at lr 0 it is exactly the model's NLL; its gradient, which flows through the inner next-token
steps, matches central finite differences in float64; the steps change the loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hope_jax.layers.attention import AttentionConfig
from hope_jax.layers.cms import CMSConfig, CMSLevel, without_surrogate_writes
from hope_jax.learn.next_token_objective import next_token_nll
from hope_jax.models.decoder import Decoder, DecoderConfig
from hope_jax.train.state import ParamCodec
from hope_jax.train.step import token_nll

B, T, V = 2, 8, 12


def _setup():
    mlp = CMSConfig(levels=(CMSLevel(chunk=4, retention=0.9), CMSLevel(period=1)), hidden=8)
    cfg = DecoderConfig(vocab_size=V, d_model=8, num_blocks=1,
                        mixers=(AttentionConfig(num_heads=2),), mlp=without_surrogate_writes(mlp),
                        max_len=T, dtype="float64", param_dtype="float64")
    graphdef, params, rest = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    codec = ParamCodec(params)
    model_of = lambda p: nnx.merge(graphdef, codec.to_state(p), rest)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T + 1)), jnp.int32)
    return model_of, codec.to_flat(params), tokens


def test_lr_zero_is_the_plain_nll_and_lr_changes_it(x64):
    model_of, params, tokens = _setup()
    plain = token_nll(model_of(params)(tokens[:, :-1]), tokens[:, 1:])
    np.testing.assert_allclose(next_token_nll(model_of, 0.0, T)(params, tokens), plain,
                               rtol=1e-6)  # float32 logits
    learned = next_token_nll(model_of, 0.5, T)(params, tokens)
    np.testing.assert_allclose(learned[:, :4], plain[:, :4], rtol=1e-6)  # scored before a step
    assert float(jnp.max(jnp.abs(learned[:, 4:] - plain[:, 4:]))) > 1e-4


def test_gradient_through_the_inner_steps_matches_finite_differences(x64):
    model_of, params, tokens = _setup()
    loss = lambda p: next_token_nll(model_of, 0.5, T)(p, tokens).mean()
    grads = jax.grad(loss)(params)
    rng = np.random.default_rng(1)
    direction = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
    shift = lambda s: {k: v + s * direction[k] for k, v in params.items()}
    eps = 1e-3  # the decoder returns float32 logits: the loss carries ~1e-7 rounding
    fd = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
    analytic = sum(jnp.sum(grads[k] * direction[k]) for k in params)
    np.testing.assert_allclose(analytic, fd, rtol=1e-3)
