"""Tests of hope_jax/train/step.py: gradient accumulation, the NaN policy, the eval sums."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.config.defaults import default_config
from hope_jax.train.build import build_trainer
from hope_jax.train.mesh import build_mesh
from hope_jax.train.state import all_finite
from hope_jax.train.step import token_nll

V = 260


def _config(accum: int = 1):
    c = default_config()
    c.model.arch = "transformer"
    c.data.seq_len = 16
    c.train.global_batch = 8
    c.optim.grad_accum = accum
    c.optim.warmup_steps = 0
    return c


def _tokens(seed: int = 0, pad_rows: int = 0) -> np.ndarray:
    t = np.random.default_rng(seed).integers(4, V, (8, 17)).astype(np.int32)
    if pad_rows:
        t[:pad_rows, 10:] = 0                       # pad id 0 at the end of some rows
    return t


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def test_grad_accumulation_equals_one_big_batch():
    """2 micro-batches of 4 give the same update as 1 batch of 8 (to 1e-6), pads included.

    Adam's first step is ≈ lr·sign(g), which amplifies rounding in tiny gradients; ε = 1 makes
    the update ≈ lr·g, so the params compare the gradients themselves."""
    mesh = build_mesh({"data": 1}, jax.devices()[:1])
    out = []
    for accum in (1, 2):
        c = _config(accum)
        c.optim.eps, c.optim.lr = 1.0, 1.0
        tr = build_trainer(c, V, mesh, pad_id=0)
        state = tr.init_state()
        tok = jax.device_put(_tokens(pad_rows=3), tr.batch_sharding)
        state, m = tr.train_step(state, tok, jnp.array(False))
        out.append((_host(state.params), float(m["loss"]), float(m["grad_norm"])))
    (p1, l1, g1), (p2, l2, g2) = out
    assert l1 == pytest.approx(l2, abs=1e-6) and g1 == pytest.approx(g2, rel=1e-6)
    for k in p1:
        np.testing.assert_allclose(p2[k], p1[k], atol=1e-6, rtol=0, err_msg=k)


def test_non_finite_step_is_skipped_and_counted():
    """A poisoned (NaN) step leaves params and optimizer state bit for bit unchanged and counts
    a bad step; the next good step applies and resets the count."""
    mesh = build_mesh({"data": 1}, jax.devices()[:1])
    tr = build_trainer(_config(), V, mesh, pad_id=0)
    state = tr.init_state()
    tok = jax.device_put(_tokens(), tr.batch_sharding)
    state, _ = tr.train_step(state, tok, jnp.array(False))
    before = _host(state)
    for bad in (1, 2):
        state, m = tr.train_step(state, jax.device_put(_tokens(bad), tr.batch_sharding),
                                 jnp.array(True))
        assert float(m["finite"]) == 0.0 and int(m["bad_steps"]) == bad
        assert not np.isfinite(float(m["loss"]))
    after = _host(state)
    assert int(after.step) == int(before.step) + 2 and int(after.bad_steps) == 2
    jax.tree.map(np.testing.assert_array_equal, after.params, before.params)
    jax.tree.map(np.testing.assert_array_equal, after.opt_state, before.opt_state)
    state, m = tr.train_step(state, tok, jnp.array(False))
    assert float(m["finite"]) == 1.0 and int(state.bad_steps) == 0
    assert bool(all_finite(state.params))
    assert not np.array_equal(np.asarray(state.params["lm_head/kernel"]),
                              before.params["lm_head/kernel"])


def test_token_nll_matches_log_softmax():
    z = jax.random.normal(jax.random.key(0), (2, 3, 7)) * 3
    y = jnp.array([[0, 6, 3], [1, 1, 2]])
    want = -jnp.take_along_axis(jax.nn.log_softmax(z), y[..., None], -1)[..., 0]
    np.testing.assert_allclose(token_nll(z, y), want, rtol=1e-6, atol=1e-6)


def test_eval_step_sums():
    """eval_step returns Σ masked nats (= the loss × tokens), Σ mask and Σ masked target bytes."""
    mesh = build_mesh({"data": 1}, jax.devices()[:1])
    tr = build_trainer(_config(), V, mesh, pad_id=0)
    state = tr.init_state()
    tok = _tokens()
    mask = np.ones((8, 16), np.float32)
    mask[0, 5:] = 0
    token_bytes = np.arange(V, dtype=np.int32) % 3
    nats, n, nbytes = tr.eval_step(state.params, jax.device_put(tok, tr.batch_sharding),
                                   jax.device_put(mask, tr.batch_sharding),
                                   jnp.asarray(token_bytes))
    nll = np.asarray(token_nll(tr.apply(state.params, jnp.asarray(tok[:, :-1])),
                               jnp.asarray(tok[:, 1:])))
    assert float(n) == mask.sum()
    assert float(nats) == pytest.approx(float((nll * mask).sum()), rel=1e-5)
    assert float(nbytes) == float((token_bytes[tok[:, 1:]] * mask).sum())


def test_bfloat16_compute_keeps_float32_params_and_loss():
    """model.dtype = bfloat16: the loss (float32) is close to the float32 model's, and params
    and Adam moments stay float32."""
    mesh = build_mesh({"data": 1}, jax.devices()[:1])
    losses = {}
    for dtype in ("float32", "bfloat16"):
        c = _config()
        c.model.dtype = dtype
        tr = build_trainer(c, V, mesh, pad_id=0)
        state, m = tr.train_step(tr.init_state(), jax.device_put(_tokens(), tr.batch_sharding),
                                 jnp.array(False))
        losses[dtype] = float(m["loss"])
        assert m["loss"].dtype == jnp.float32 and float(m["finite"]) == 1.0
        assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
        assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state.opt_state))
    assert losses["bfloat16"] == pytest.approx(losses["float32"], abs=0.05)


def test_chunked_token_nll_equals_whole_values_and_gradients(x64):
    """The head and loss taken 3 positions at a time over T = 7 (padded) equal token_nll of
    the whole logits: values, and gradients w.r.t. the hidden states and the head (float64)."""
    from hope_jax.train.step import chunked_token_nll
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    h = jax.random.normal(k[0], (2, 7, 5), jnp.float64)
    w = jax.random.normal(k[1], (5, 11), jnp.float64)
    y = jax.random.randint(k[2], (2, 7), 0, 11)
    whole = lambda h, w: jnp.sum(jnp.sin(token_nll(h @ w, y)))
    chunked = lambda h, w: jnp.sum(jnp.sin(chunked_token_nll(lambda x: x @ w, h, y, 3)))
    np.testing.assert_allclose(chunked(h, w), whole(h, w), rtol=1e-12)
    for a, b in zip(jax.grad(chunked, (0, 1))(h, w), jax.grad(whole, (0, 1))(h, w)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_loss_chunk_gives_the_same_step_in_less_memory():
    """model.loss_chunk: the same loss, gradient and update as the whole-sequence loss (pads
    included), and a compiled step whose temporaries shrink with the [B, T, V] logits."""
    mesh = build_mesh({"data": 1}, jax.devices()[:1])
    vocab, out, temp = 4096, [], []
    tokens = np.random.default_rng(1).integers(4, vocab, (8, 65)).astype(np.int32)
    tokens[:2, 40:] = 0
    for chunk in (0, 16):
        c = _config()
        c.data.seq_len, c.model.loss_chunk = 64, chunk
        c.optim.eps, c.optim.lr = 1.0, 1.0
        tr = build_trainer(c, vocab, mesh, pad_id=0)
        state = tr.init_state()
        tok = jax.device_put(tokens, tr.batch_sharding)
        compiled = tr.train_step.lower(state, tok, jnp.array(False)).compile()
        temp.append(compiled.memory_analysis().temp_size_in_bytes)
        state, m = compiled(state, tok, jnp.array(False))
        out.append((_host(state.params), float(m["loss"]), float(m["grad_norm"])))
    (p1, l1, g1), (p2, l2, g2) = out
    assert l2 == pytest.approx(l1, rel=1e-6) and g2 == pytest.approx(g1, rel=1e-5)
    for k in p1:
        np.testing.assert_allclose(p2[k], p1[k], atol=2e-6, rtol=0, err_msg=k)
    logits = 8 * 64 * vocab * 4
    assert temp[1] < temp[0] - logits, (temp, logits)
