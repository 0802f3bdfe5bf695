"""The memory scans split over the `sequence` mesh axis (hope_jax/sharding/sequence_scan.py): on 8
fake CPU devices the split scan equals the plain one (values, final state and gradients), the
states really pass from device to device, and the compiled memory per device falls with the axis.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax import sharding
from hope_jax.core.self_modifying import SelfModifyingLevel, self_modifying_scan
from hope_jax.layers.cms import CMSLevel, InContextSwiGLU
from hope_jax.layers.titans import titans_lmm, titans_mac
from hope_jax.sharding.sequence_scan import sequence_scan, sequence_shards


def _on_mesh(fn, axes: dict, *args):
    """fn(*args) jitted with `axes` in context (as the trainer traces its step), and its text."""
    mesh = sharding.make_mesh(axes)
    with jax.set_mesh(mesh):
        args = jax.device_put(args, jax.NamedSharding(mesh, jax.P()))
        jitted = jax.jit(fn)
        return jitted(*args), jitted.lower(*args).compile().as_text()


@pytest.mark.fast
def test_split_self_modifying_scan_is_exact_in_float64(x64):
    """Hope's self-modifying memories at odd sizes, T = 48 over sequence = 4 (segments of 12 =
    three C_mem chunks): outputs, final state and gradients equal the plain scan to 1e-12."""
    level = SelfModifyingLevel(chunk_other=3, chunk_memory=12, scan_group=2, eta_max=0.3,
                               normalize_value=True)
    b, t, h, d = 2, 48, 3, 5
    params = level.init_params(jax.random.PRNGKey(0), h, d, jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    xq, xk, xv, w = (jax.random.normal(k, (b, t, h, d), jnp.float64) for k in keys)

    def loss(params, xk):
        scan = lambda p, s, xs: self_modifying_scan(level, p, s, *xs)
        o, state = sequence_scan(scan, params, level.init_state(params, b), (xq, xk, xv),
                                 align=level.chunk_memory)
        ends = sum(jnp.sum(jnp.sin(m)) for ms in state.memories.values() for m in ms)
        return jnp.sum(o * w) + ends, (o, state)

    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    (want, (o1, s1)), g1 = jax.jit(grad)(params, xk)
    ((got, (o2, s2)), g2), text = _on_mesh(grad, {"data": 2, "sequence": 4}, params, xk)
    assert "collective-permute" in text                        # states passed between devices
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(o2, o1, atol=1e-12)
    assert int(s2.position) == int(s1.position) == t
    for a, c in zip(jax.tree.leaves((s1, g1)), jax.tree.leaves((s2, g2))):
        np.testing.assert_allclose(c, a, atol=1e-11)


@pytest.mark.parametrize("layer", ["in_context_cms", "in_context_cms_nested", "titans_lmm",
                                   "titans_lmm_persistent"])
def test_split_layers_equal_the_plain_layer(layer):
    """Over sequence = 4, outputs and parameter gradients equal the layer without a mesh: the
    CMS in-context level, alone and with a nested reset every 32 tokens (segments in fresh
    form), the Titans memory layer without and with persistent tokens (those write their prefix
    first and stream the segments). At a length the axis does not split, the plain scan runs,
    with the same values."""
    d = 16
    if layer.startswith("in_context_cms"):
        # nested: segments must start at resets; at T = 64 (segments of 16) they would not
        nested = layer.endswith("nested")
        model = InContextSwiGLU(d, 24, CMSLevel(chunk=4, normalize="curvature", retention=0.9),
                                rngs=nnx.Rngs(0), reset_every=32 if nested else None)
        lengths = ((128, True), (64, False)) if nested else ((64, True), (72, False))
        align = 32 if nested else 4
    else:
        n_p = 4 if layer.endswith("persistent") else 0
        model = titans_lmm(2, chunk_size=4, num_persistent=n_p).build(d, rngs=nnx.Rngs(0))
        # the plain scan at a length the axis does not split is checked once for the Titans
        lengths = ((28, True), (34, False)) if n_p else ((32, True),)
        align = 1 if n_p else 4

    def loss(model, x):
        y, _ = model(x)
        return jnp.sum(jnp.tanh(y)), y

    grad = nnx.value_and_grad(loss, has_aux=True)
    for length, split in lengths:
        x = jax.random.normal(jax.random.PRNGKey(length), (2, length, d))
        (want, y1), g1 = nnx.jit(grad)(model, x)
        mesh = sharding.make_mesh({"data": 2, "sequence": 4})
        with jax.set_mesh(mesh):
            assert (sequence_shards(length, align) == 4) == split
            (got, y2), g2 = nnx.jit(grad)(model, x)
        np.testing.assert_allclose(y2, y1, atol=2e-5, err_msg=f"T={length}")
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for a, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(c, a, atol=2e-5, rtol=1e-4)


def test_split_titans_mac_equals_the_plain_layer():
    """Titans MAC over sequence = 4, whole MAC segments of 8 per device: the outputs equal the
    layer without a mesh, so each device read its segments from the MAC state (memory, conv
    buffers) handed on by the one before. (Values only: the split's gradients are the other
    layers' test above.)"""
    d = 16
    model = titans_mac(2, segment=8, chunk_size=4).build(d, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, d))
    forward = nnx.jit(lambda m, x: m(x)[0])
    want = forward(model, x)
    with jax.set_mesh(sharding.make_mesh({"data": 2, "sequence": 4})):
        assert sequence_shards(32, 8) == 4
        got = forward(model, x)
    np.testing.assert_allclose(got, want, atol=2e-5)
