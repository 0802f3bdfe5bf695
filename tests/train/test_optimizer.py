"""Tests of hope_jax/optim/outer.py: decay mask, schedule, multi-frequency wiring (D9/D23)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hope_jax.config.build import decoder_config
from hope_jax.config.defaults import default_config
from hope_jax.layers.cms import update_periods
from hope_jax.models.decoder import Decoder
from hope_jax.optim.outer import decay_mask, lr_schedule, make_optimizer
from hope_jax.train.state import ParamCodec


def _hope_names_and_periods():
    c = default_config()
    c.data.seq_len = 16
    model = nnx.eval_shape(lambda: Decoder(decoder_config(c, 260), rngs=nnx.Rngs(0)))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    codec = ParamCodec(params)
    return codec.to_flat(params), codec.to_flat(update_periods(model))


@pytest.mark.fast
def test_decay_mask_rule_on_the_hope_model():
    """Kernels/LM head decay; embedding, norms (also [H, d_h]), gate biases, scalars and (by
    default) memory initial states do not (exact leaf sets: test_outer_optimizers.py)."""
    params, _ = _hope_names_and_periods()
    mask = decay_mask(params)
    assert mask["blocks/0/mixer/w_q/kernel"] and mask["lm_head/kernel"]
    assert mask["blocks/0/mlp/levels/1/w_up/kernel"]
    assert not mask["embed"]
    assert not mask["norm/scale"] and not mask["blocks/1/norm_mlp/scale"]
    assert not mask["blocks/0/mixer/out_norm/scale"]          # [H, d_h] norm scale
    assert not mask["blocks/0/mlp/levels/0/rho"]              # scalar
    assert not mask["blocks/0/mixer/gate_heads/1"]            # gate bias [H]
    for name, decayed in mask.items():                        # nothing of ndim < 2 decays
        if params[name].ndim < 2:
            assert not decayed, name


@pytest.mark.fast
def test_schedule_warmup_cosine_floor():
    c = default_config().optim
    c.lr, c.warmup_steps, c.min_lr_ratio = 1.0, 10, 0.1
    s = lr_schedule(c, 110)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0) and float(s(110)) == pytest.approx(0.1)
    c.schedule = "constant"
    assert float(lr_schedule(c, 110)(500)) == pytest.approx(1.0)


def _toy():
    params = {"fast": jnp.ones((2, 3)), "mid": jnp.ones((3, 3)) * 2, "slow": jnp.ones((4,)) * 3}
    periods = {"fast": 1, "mid": 2, "slow": 4}
    grads = [{k: jnp.full(v.shape, float(i + 1) * (j + 1)) for j, (k, v) in
              enumerate(sorted(params.items()))} for i in range(8)]
    return params, periods, grads


def _run(tx, params, grads):
    state = tx.init(params)
    out = [params]
    for g in grads:
        upd, state = tx.update(g, state, params)
        params = optax.apply_updates(params, upd)
        out.append(params)
    return out


@pytest.mark.parametrize("gamma", [0.0, None])   # None: the config's default (0.5)
def test_multi_frequency_sgd_hand_computation(gamma):
    """Periods {1, 2, 4}, inner = SGD: a level of period P changes exactly on steps P, 2P, … and
    then by −lr · P^γ · Σ(its last P gradients) / P (γ = 0 is D23: the mean of the accumulated
    gradients; `optim.cms_lr_exponent` = γ)."""
    params, periods, grads = _toy()
    c = default_config().optim
    c.lr, c.warmup_steps, c.schedule = 0.1, 0, "constant"
    if gamma is None:
        gamma = c.cms_lr_exponent
        assert gamma == 0.5
    c.cms_lr_exponent = gamma
    tx, _ = make_optimizer(c, 8, periods, inner=optax.identity())
    traj = _run(tx, params, grads)
    for name, P in periods.items():
        for step in range(1, 9):
            before, after = np.asarray(traj[step - 1][name]), np.asarray(traj[step][name])
            if step % P:
                np.testing.assert_array_equal(after, before, err_msg=f"{name} moved at {step}")
            else:
                acc = sum(np.asarray(grads[i][name]) for i in range(step - P, step))
                np.testing.assert_allclose(after, before - 0.1 * P ** gamma * acc / P, rtol=1e-6,
                                           err_msg=f"{name} at step {step}")


def test_multi_frequency_all_periods_one_equals_plain_adamw():
    """multi_frequency on with every period 1 (and off with periods > 1) equals optax's own
    clip + AdamW with the same decay mask, bit for bit."""
    params, periods, grads = _toy()
    c = default_config().optim
    c.warmup_steps = 2
    sched = lr_schedule(c, 8)
    plain = optax.chain(optax.clip_by_global_norm(c.clip_norm),
                        optax.adamw(sched, b1=c.b1, b2=c.b2, eps=c.eps,
                                    weight_decay=c.weight_decay, mask=decay_mask))
    want = _run(plain, params, grads)
    ones = {k: 1 for k in periods}
    for tx in (make_optimizer(c, 8, ones)[0], make_optimizer(c, 8, None)[0]):
        got = _run(tx, params, grads)
        for a, b in zip(got, want):
            for k in a:
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    c.multi_frequency = False                     # switch off: periods ignored
    got = _run(make_optimizer(c, 8, periods)[0], params, grads)
    for k in got[-1]:
        np.testing.assert_array_equal(np.asarray(got[-1][k]), np.asarray(want[-1][k]))
    c.multi_frequency = True                      # on with periods > 1: the slow levels differ
    got = _run(make_optimizer(c, 8, periods)[0], params, grads)
    assert not np.allclose(np.asarray(want[2]["slow"]), np.asarray(params["slow"]))
    np.testing.assert_array_equal(np.asarray(got[2]["slow"]), np.asarray(params["slow"]))


def test_hope_tiny_has_outer_levels_labelled():
    """The tiny Hope model's CMS outer levels carry periods > 1 (the trainer's labels)."""
    _, periods = _hope_names_and_periods()
    assert periods["blocks/0/mlp/levels/1/w_up/kernel"] == 2
    assert periods["blocks/1/mlp/levels/2/w_down/kernel"] == 8
    assert periods["blocks/0/mixer/w_q/kernel"] == 1
