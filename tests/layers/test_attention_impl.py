"""The attention implementations (layers/attention.py) against the dense reference: values and
gradients, odd lengths, windows, the persistent prefix; dispatch; compiled memory; TPU lowering."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hope_jax.layers.attention import (Attention, AttentionConfig, dense_attention,
                                       resolve_implementation, self_attention, splash_attention)

# (T, window, persistent tokens, block): odd T; flash form (no window / window ≥ T), banded form
# (window across blocks, window 1), with and without the prefix
CASES = [(37, 50, 0, 8), (37, None, 4, 16), (37, 13, 3, 8), (37, 1, 0, 8)]


def _inputs(t: int, p: int, dtype, h: int = 2, d: int = 8):
    ks = jax.random.split(jax.random.PRNGKey(t + p), 6)
    q, k, v, w = (jax.random.normal(ks[i], (2, t, h, d), dtype) for i in range(4))
    pre = tuple(jax.random.normal(ks[4 + i], (p, h, d), dtype) for i in range(2)) if p else (None,
                                                                                            None)
    return (q, k, v), w, pre


def _max_err(t, window, p, block, dtype, impl="xla") -> float:
    """max |Δ| over the output and the q, k, v gradients (one jit for both implementations)."""
    qkv, w, pre = _inputs(t, p, dtype)
    pos = jnp.arange(t, dtype=jnp.int32) + 3

    @jax.jit
    def both(qkv, w, pre):
        pk, pv = pre
        fns = (lambda q, k, v: self_attention(q, k, v, pos, window, pk, pv, implementation=impl,
                                              block_size=block),
               lambda q, k, v: dense_attention(q, k, v, pos, pos, window, pk, pv))
        return [(fn(*qkv), *jax.grad(lambda *x: jnp.sum(fn(*x) * w), argnums=(0, 1, 2))(*qkv))
                for fn in fns]

    got, want = both(qkv, w, pre)
    return max(float(jnp.abs(a - b).max()) for a, b in zip(got, want))


def test_blockwise_equals_dense_float64(x64):
    for case in CASES:
        assert _max_err(*case, jnp.float64) < 1e-12, case


def test_every_implementation_equals_dense_float32():
    """float32; on the CPU 'cudnn' and 'pallas' fall back to 'xla' (16 ≤ block: jax.nn's path)."""
    for impl in ("auto", "cudnn", "pallas"):
        assert _max_err(16, 4, 0, 32, jnp.float32, impl) < 2e-6, impl
    assert _max_err(*CASES[2], jnp.float32) < 2e-6


def test_dispatch():
    q = jnp.zeros((1, 256, 2, 8), jnp.bfloat16)
    assert jax.default_backend() == "cpu"
    for impl in ("auto", "xla", "cudnn", "pallas"):
        assert resolve_implementation(impl, q, has_prefix=False) == "xla"
    assert resolve_implementation("dense", q, has_prefix=True) == "dense"
    with pytest.raises(ValueError, match="implementation"):
        resolve_implementation("flash", q, has_prefix=False)


def test_module_window_prefix_equals_dense():
    """The Attention module (the SWA* of Titans MAG: window + persistent prefix) trains through
    the blockwise path with the dense path's outputs and parameter gradients."""
    base = AttentionConfig(num_heads=2, window=6, num_persistent=3)
    u = jax.random.normal(jax.random.PRNGKey(0), (2, 21, 16))
    results = []
    for impl in ("dense", "xla"):
        cfg = dataclasses.replace(base, implementation=impl, block_size=8)
        model = Attention(16, cfg, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(u)[0] ** 2)
        results.append(jax.jit(jax.value_and_grad(loss))(params))
    (la, ga), (lb, gb) = results
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_windowed_memory_far_below_dense():
    """Compiled temporaries of forward + backward at T = 4096, window 64: the banded blockwise
    form needs a few MiB where the dense one holds [B, H, T, T] logits (~512 MiB)."""
    t, w = 4096, 64
    x = jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32)
    pos = jnp.arange(t, dtype=jnp.int32)

    def temp_bytes(fn) -> int:
        grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) ** 2), argnums=(0, 1, 2))
        return jax.jit(grad).trace(x, x, x).lower().compile().memory_analysis().temp_size_in_bytes

    dense = temp_bytes(lambda q, k, v: dense_attention(q, k, v, pos, pos, w))
    banded = temp_bytes(lambda q, k, v: self_attention(q, k, v, pos, w, implementation="xla",
                                                       block_size=128))
    assert dense > 256 * 2 ** 20 and banded < 16 * 2 ** 20, (dense, banded)


def test_splash_lowers_for_tpu():
    """TPU splash attention (local window) lowers to a Mosaic call, forward and backward (the CPU
    cannot run it)."""
    x = jax.ShapeDtypeStruct((1, 256, 2, 128), jnp.bfloat16)
    grad = jax.grad(lambda q, k, v: splash_attention(q, k, v, 64).astype(jnp.float32).sum())
    text = jax.jit(grad).trace(x, x, x).lower(lowering_platforms=("tpu",)).as_text()
    assert text.count("tpu_custom_call") >= 2


def test_general_blockwise_equals_dense_float64(x64):
    """causal_attention's long-query path: unsorted key positions (a ring buffer), a window, the
    prefix; values and gradients (the full-cache case: the prefill test below)."""
    from hope_jax.layers.attention import general_blockwise_attention
    t, s = 23, 41
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    q, w = (jax.random.normal(ks[i], (2, t, 2, 8), jnp.float64) for i in (0, 1))
    k, v = (jax.random.normal(ks[i], (2, s, 2, 8), jnp.float64) for i in (2, 3))
    pre = tuple(jax.random.normal(ks[i], (3, 2, 8), jnp.float64) for i in (4, 5))
    q_pos = jnp.arange(t, dtype=jnp.int32) + 30
    k_pos = jnp.asarray(np.random.RandomState(0).permutation(s) + 12, jnp.int32)

    @jax.jit
    def both(q, k, v):
        out = []
        for fn in (lambda q, k, v: general_blockwise_attention(q, k, v, q_pos, k_pos, 9, *pre,
                                                               block_size=8),
                   lambda q, k, v: dense_attention(q, k, v, q_pos, k_pos, 9, *pre)):
            g = jax.grad(lambda *x: jnp.sum(fn(*x) * w), argnums=(0, 1, 2))(q, k, v)
            out.append((fn(q, k, v), *g))
        return out

    got, want = both(q, k, v)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(got, want)) < 1e-12


def test_long_prefill_into_cache_equals_training():
    """A prompt longer than the block written into a KV cache (full) or a ring buffer (window)
    gives the training forward's outputs (the long-query path of causal_attention)."""
    u = jax.random.normal(jax.random.PRNGKey(0), (2, 21, 16))
    for window in (None, 6):
        cfg = AttentionConfig(num_heads=2, window=window, num_persistent=2, block_size=8)
        model = Attention(16, cfg, rngs=nnx.Rngs(0))
        want, _ = model(u)
        got, cache = nnx.jit(lambda m, u: m(u, m.init_state(2, 32)))(model, u)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
        assert int(cache.position) == 21
