"""Tests of hope_jax/optim/newton_schulz.py and muon.py (design §2.7, Eqs. 42–44, 52; D29)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hope_jax.optim as ho

from . import _reference as ref
from ._harness import SHAPES, assert_trees_close, run

# Gaussian matrices with aspect ratio ≥ 2 are well conditioned (σ_min/σ_max ≳ 0.17):
# design §2.7 (a).
WELL_CONDITIONED_SHAPES = [(16, 32), (64, 32), (24, 96), (128, 32)]


@pytest.mark.fast
@pytest.mark.parametrize("shape", WELL_CONDITIONED_SHAPES)
def test_quintic_singular_values_near_one(shape):
    """Quintic NS(5) in fp32 maps every singular value of a well-conditioned Gaussian matrix into
    [0.68, 1.21] (design §2.7 (a)).

    The quintic's attracting band is [0.6818, 1.2024] (its value at 1 is 0.701), so the lower bound
    cannot be 0.7: singular values near 0.682 do occur (they are what Muon's coefficients trade for
    speed).
    """
    x = jax.random.normal(jax.random.PRNGKey(sum(shape)), shape)
    sv = np.linalg.svd(np.asarray(ho.newton_schulz(x)), compute_uv=False)
    assert sv.min() >= 0.68 and sv.max() <= 1.21, (sv.min(), sv.max())


def test_matches_numpy_including_tall_and_stacked(x64):
    """NS(5) equals the numpy iteration for a wide, a tall (transposed) and a stacked (2, 6, 3)
    input."""
    rng = np.random.default_rng(30)
    for shape in [(4, 6), (6, 3), (2, 6, 3)]:
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(np.asarray(ho.newton_schulz(jnp.asarray(x))),
                                   ref.newton_schulz(x), atol=1e-10)


@pytest.mark.fast
def test_ns_is_odd():
    """NS(−X) = −NS(X) (the polynomial has only odd powers) for wide and tall X."""
    for shape in [(8, 12), (12, 8)]:
        x = jax.random.normal(jax.random.PRNGKey(1), shape)
        ns = jax.jit(ho.newton_schulz)
        np.testing.assert_array_equal(np.asarray(ns(-x)), -np.asarray(ns(x)))


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_cubic_many_steps_is_polar_factor(x64, shape):
    """Cubic NS (1.5, −0.5, 0) with 60 steps equals the SVD polar factor U Vᵀ (design §2.7 (a))."""
    x = np.random.default_rng(31).standard_normal(shape)
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    ns = ho.newton_schulz(jnp.asarray(x), steps=60, coefficients="cubic", eps=0.0)
    np.testing.assert_allclose(np.asarray(ns), u @ vt, atol=1e-9)


def test_muon_matches_numpy(x64):
    """muon(η, β): −η NS(s), s ← βs + g on matrices, −η s on vectors, equals numpy over 5 steps."""
    grads = ref.gradient_stream(32, SHAPES)
    outs, _ = run(ho.muon(0.1, beta=0.9), grads)
    moms = ref.preconditioned_momentum(grads, 0.9)
    assert_trees_close(outs, [{k: -0.1 * ref.ns_if_matrix(v) for k, v in m.items()} for m in moms])


@pytest.mark.fast
def test_muon_with_identity_ns_is_momentum_sgd(x64):
    """Muon with NS replaced by the identity (mask all False) equals optax.sgd with momentum (design
    §2.7 (c))."""
    grads = ref.gradient_stream(33, SHAPES)
    no_ns = lambda tree: jax.tree.map(lambda _: False, tree)
    ours, _ = run(ho.muon(0.05, beta=0.95, ns_mask=no_ns), grads)
    theirs, _ = run(optax.sgd(0.05, momentum=0.95), grads)
    assert_trees_close(ours, theirs, rtol=0, atol=0)


def test_default_mask_skips_vectors_embeddings_and_head():
    """Default NS mask: rank-≥2 leaves only, and not those whose path names 'embed' or 'lm_head'
    (D29)."""
    params = {"embed": {"embedding": jnp.ones((10, 4))},
              "block": {"w": jnp.ones((4, 4)), "b": jnp.ones(4)},
              "lm_head": {"kernel": jnp.ones((4, 10))}, "stack": jnp.ones((2, 4, 4))}
    mask = ho.matrix_mask(params)
    assert mask == {"embed": {"embedding": False}, "block": {"w": True, "b": False},
                    "lm_head": {"kernel": False}, "stack": True}
    u, _ = ho.scale_by_newton_schulz().update(params, optax.EmptyState())
    np.testing.assert_array_equal(np.asarray(u["embed"]["embedding"]), 1.0)
    np.testing.assert_array_equal(np.asarray(u["lm_head"]["kernel"]), 1.0)
    assert not np.allclose(np.asarray(u["block"]["w"]), 1.0)


def test_shape_scale(x64):
    """shape_scale multiplies the NS output by √max(1, rows/cols): ×√2 for (8, 4), ×1 for (4, 8)."""
    rng = np.random.default_rng(34)
    for shape, factor in [((8, 4), np.sqrt(2.0)), ((4, 8), 1.0)]:
        x = rng.standard_normal(shape)
        u, _ = ho.scale_by_newton_schulz(shape_scale=True).update({"w": jnp.asarray(x)},
                                                                  optax.EmptyState())
        np.testing.assert_allclose(np.asarray(u["w"]), factor * ref.newton_schulz(x), atol=1e-10)


def test_orthogonalize_wraps_any_momentum(x64):
    """orthogonalize(delta momentum) outputs NS(s) of the delta-momentum state (NL Eq. 52)."""
    grads = ref.gradient_stream(35, SHAPES)
    outs, _ = run(ho.orthogonalize(ho.scale_by_delta_momentum(0.9, 1.0)), grads)
    moms = ref.delta_momentum(grads, 0.9, 1.0)
    assert_trees_close(outs, [{k: ref.ns_if_matrix(v) for k, v in m.items()} for m in moms])


def test_bfloat16_option_runs():
    """ns_dtype='bfloat16' computes NS in bf16 and returns the input dtype, close to the fp32
    result."""
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 32))
    y = ho.newton_schulz(x, dtype="bfloat16")
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np.asarray(ho.newton_schulz(x)), atol=0.05)
