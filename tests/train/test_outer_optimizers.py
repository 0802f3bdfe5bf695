"""Outer optimizers from `config.optim.name` (optim/outer.py): each one trains a tiny Hope,
and the weight-decay / Newton–Schulz masks pick exactly the intended leaves."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hope_jax.config.build import decoder_config
from hope_jax.config.defaults import default_config
from hope_jax.config.validate import ConfigError, validate
from hope_jax.layers.cms import update_periods
from hope_jax.models.decoder import Decoder
from hope_jax.optim.outer import OPTIMIZERS, decay_mask, is_hidden_matrix, make_optimizer
from hope_jax.train.state import ParamCodec

LR = {"adamw": 3e-3, "muon": 0.02, "m3": 3e-4, "delta_momentum": 0.3, "dmgd": 0.3}


def _config(arch: str = "hope"):
    c = default_config()
    c.model.arch, c.model.d_model, c.data.seq_len = arch, 32, 16
    return c


def _flat(arch: str, abstract: bool = True, **model):
    c = _config(arch)
    for k, v in model.items():
        c.model[k] = v
    make = lambda: Decoder(decoder_config(c, 260), rngs=nnx.Rngs(0))
    m = nnx.eval_shape(make) if abstract else make()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    codec = ParamCodec(params)
    periods = {k: int(v) for k, v in codec.to_flat(update_periods(m)).items()}
    return codec.to_flat(params), periods, (graphdef, rest, codec)


@pytest.mark.fast
def test_decay_mask_exact_leaves():
    """Hope: exactly the projection kernels, conv weights, CMS maps and the LM head decay; the
    meta-learned memories and gate heads only with decay_memory_init; Titans MAG likewise
    (memory0 and persistent tokens never by default)."""
    params, _, _ = _flat("hope")
    got = {k for k, d in decay_mask(params).items() if d}
    memory = {k for k in params if "/memories/" in k or "/gate_heads/" in k and params[k].ndim == 2}
    want = {k for k in params if k == "lm_head/kernel" or k.endswith("/kernel") and "/mixer/" in k
            or "/convs/" in k or "/levels/" in k and (k.endswith("kernel") or "w_target" in k)}
    assert got == want
    assert {k for k, d in decay_mask(params, decay_memory_init=True).items() if d} == want | memory
    mag, _, _ = _flat("titans_mag")
    got = {k for k, d in decay_mask(mag).items() if d}
    assert not any("memory0" in k or "persistent" in k or "norm" in k or "bias" in k for k in got)
    assert "blocks/0/mixer/memory/memory0/0" in {
        k for k, d in decay_mask(mag, decay_memory_init=True).items() if d}
    assert "embed" not in got and "lm_head/kernel" in got


@pytest.mark.fast
def test_newton_schulz_only_on_hidden_matrices():
    params, _, _ = _flat("hope")
    ns = {k for k, v in params.items() if is_hidden_matrix(k, v.ndim)}
    want = {k for k, v in params.items() if v.ndim == 2 and "/memories/" not in k
            and "gate_heads" not in k and "norm" not in k and "convs" not in k
            and k not in ("embed", "lm_head/kernel")}
    assert ns == want and "blocks/0/mlp/levels/0/w_target" in ns
    stacked, _, _ = _flat("transformer", scan_blocks=True)        # [L, d_in, d_out] leaves
    assert is_hidden_matrix("blocks/mixer/w_q/kernel", stacked["blocks/mixer/w_q/kernel"].ndim)
    assert not is_hidden_matrix("blocks/norm_mlp/scale", 2)


def test_unknown_optimizer_fails_in_validation():
    c = _config()
    c.optim.name = "sgdx"
    with pytest.raises(ConfigError, match="optim.name"):
        validate(c, device_count=1, process_count=1)
    c.optim.name, c.optim.fallback = "muon", "nope"
    with pytest.raises(ConfigError, match="optim.fallback"):
        validate(c, device_count=1, process_count=1)


def test_every_optimizer_trains_a_tiny_model():
    """6 steps on one batch of a 1-block Transformer++ with multi-frequency groups (the MLP at
    period 2, as CMS levels would be), clipping and decay: finite and the loss goes down, for
    every name (one compiled loss+grad shared by all)."""
    params, _, (graphdef, rest, codec) = _flat("transformer", abstract=False, num_blocks=1)
    periods = {k: 2 if "/mlp/" in k else 1 for k in params}
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 17), 0, 260)

    def loss_fn(p):
        logits = nnx.merge(graphdef, codec.to_state(p), rest)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    for name in OPTIMIZERS:
        c = _config().optim
        c.name, c.lr, c.warmup_steps, c.schedule = name, LR[name], 0, "constant"
        tx, _ = make_optimizer(c, 10, periods)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        p, state, losses = params, tx.init(params), []
        for _ in range(6):
            loss, g = value_and_grad(p)
            upd, state = step(g, state, p)
            p = optax.apply_updates(p, upd)
            losses.append(float(loss))
        assert np.all(np.isfinite(losses)), (name, losses)
        assert losses[-1] < losses[0] - 1e-3, (name, losses)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(p)), name


@pytest.mark.fast
def test_muon_fallbacks_on_toy_params():
    """Muon: the hidden matrix gets NS (orthogonal rows), the embedding and the norm get the
    fallback: AdamW's first step (lr · sign(g)) or plain momentum (lr · g)."""
    params = {"blocks/0/mixer/w_q/kernel": jnp.zeros((4, 4)), "embed": jnp.zeros((5, 4)),
              "norm/scale": jnp.ones((4,))}
    grads = {k: jax.random.normal(jax.random.PRNGKey(i), v.shape)
             for i, (k, v) in enumerate(params.items())}
    for fallback in ("adamw", "momentum"):
        c = _config().optim
        c.name, c.fallback, c.lr, c.warmup_steps, c.schedule = "muon", fallback, 1.0, 0, "constant"
        c.clip_norm, c.weight_decay = 0.0, 0.0
        tx, _ = make_optimizer(c, 10)
        upd, _ = tx.update(grads, tx.init(params), params)
        w = np.asarray(upd["blocks/0/mixer/w_q/kernel"])
        assert np.abs(w @ w.T - np.diag(np.diag(w @ w.T))).max() < 0.35   # ~orthogonal rows
        for k in ("embed", "norm/scale"):
            want = np.sign(grads[k]) if fallback == "adamw" else np.asarray(grads[k])
            np.testing.assert_allclose(-np.asarray(upd[k]), want, rtol=1e-4, atol=1e-6)
