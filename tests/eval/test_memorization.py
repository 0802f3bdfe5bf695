"""Test-time memorisation: memory on/off both run; they differ for a memory model and are equal
for pure attention (its only state is context, which restarts at every document)."""
import jax
import numpy as np
import pytest
from flax import nnx

from hope_jax.eval import memorization_bpb, reset_context
from hope_jax.layers import titans_lmm
from hope_jax.layers.attention import KVCache
from eval_helpers import tiny_model

TB = np.asarray([1] * 256 + [0] * 4)
# D19 gate biases make random tiny Titans diverge on random bytes (see tests/models/test_overfit.py)
STABLE_TITANS = dict(mixers=(titans_lmm(4, chunk_size=8, eta_bias=-4.0),))


def _docs():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, n).astype(np.int32) for n in (40, 70, 20, 66)]


def test_attention_model_on_equals_off():
    out = memorization_bpb(tiny_model("transformer"), _docs(), TB, chunk_len=16, max_chunks=4)
    assert out["documents"] == 4          # 40 → 2 chunks, 70 → 4, 20 → 1, 66 → 4
    assert out["off"]["tokens"] == out["on"]["tokens"] == 16 * (2 + 4 + 1 + 4)
    np.testing.assert_allclose(out["on"]["bpb"], out["off"]["bpb"], rtol=1e-6)


@pytest.mark.parametrize("arch, overrides", [("titans_lmm", STABLE_TITANS), ("hope", {})])
def test_memory_model_on_differs_from_off(arch, overrides):
    out = memorization_bpb(tiny_model(arch, **overrides), _docs(), TB, chunk_len=16,
                           max_chunks=4)
    assert np.isfinite(out["on"]["bpb"]) and np.isfinite(out["off"]["bpb"])
    assert abs(out["gain"]) > 1e-6
    # the paired interval: per-document sums add up, and the standard error is the ratio
    # estimator's over the documents' (nats_off − nats_on) against their bytes
    docs = out["per_document"]
    d = np.asarray([x["nats_off"] - x["nats_on"] for x in docs]) / np.log(2)
    nbytes = np.asarray([x["bytes"] for x in docs], float)
    np.testing.assert_allclose(d.sum() / nbytes.sum(), out["gain"], rtol=1e-9)
    resid = d - out["gain"] * nbytes
    se = np.sqrt(len(d) / (len(d) - 1) * np.sum(resid ** 2)) / nbytes.sum()
    np.testing.assert_allclose(out["gain_se"], se, rtol=1e-9)
    lo, hi = out["gain_ci95"]
    assert lo < out["gain"] < hi and hi - lo == pytest.approx(2 * 1.96 * se)


def test_off_equals_scoring_each_document_alone():
    """Memory off = every document scored from fresh state, independent of its neighbours."""
    model = tiny_model("titans_lmm", **STABLE_TITANS)
    docs = _docs()
    both = memorization_bpb(model, docs[:2], TB, 16, 4)["off"]["nats"]
    single = sum(memorization_bpb(model, [d], TB, 16, 4)["off"]["nats"] for d in docs[:2])
    np.testing.assert_allclose(both, single, rtol=1e-5)


def test_reset_context_keeps_memory_and_resets_kv():
    model = tiny_model("titans_mag")
    fresh = model.init_state(1, 32)
    _, used = nnx.jit(lambda m, t: m.prefill(t, 32))(model, np.arange(20, dtype=np.int32)[None])
    mixed = reset_context(used, fresh)
    kv = [x for x in jax.tree.leaves(mixed, is_leaf=lambda x: isinstance(x, KVCache))
          if isinstance(x, KVCache)]
    assert kv and all(int(np.asarray(c.position).max()) == 0 for c in kv)
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(mixed), jax.tree.leaves(fresh))]
    assert any(changed)   # the neural memory kept what it wrote


def test_short_documents_are_rejected():
    with pytest.raises(ValueError, match="chunk_len"):
        memorization_bpb(tiny_model("transformer"), [np.arange(10)], TB, chunk_len=16)
