"""Dispatch (`implementation=`): auto picks xla on CPU, explicit unsupported choices raise, auto
falls back with a warning, and the result does not depend on which implementation runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.kernels import _dispatch
from hope_jax.kernels.linear_chunk_update import linear_chunk_update
from hope_jax.kernels.mlp_chunk_update import mlp_chunk_update
from kernel_cases import assert_tree_close, linear_inputs, mlp_inputs


def _linear(x, **kw):
    fn = jax.jit(lambda q, k, v, eta, alpha, w0: linear_chunk_update(q, k, v, eta, alpha, w0, **kw))
    return fn(x["q"], x["k"], x["v"], x["eta"], x["alpha"], x["w0"])


@pytest.mark.fast
def test_explicit_unsupported_choices_raise_and_auto_is_xla_on_cpu():
    """On CPU: auto resolves to xla (no warning) and gives bit-identical results to xla;
    pallas_tpu / pallas_gpu / unknown names / shapes a kernel cannot tile raise ValueError."""
    assert _dispatch.backend_platform() == "cpu"
    assert _dispatch.resolve_implementation("auto", lambda name: None, "op") == "xla"
    x = linear_inputs(0, 1, 20, 2, 32, 32)
    auto = _linear(x, chunk_size=8)
    xla = _linear(x, chunk_size=8, implementation="xla")
    for a, b in zip(auto, xla):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for impl in ("pallas_tpu", "pallas_gpu", "triton", "cuda"):
        with pytest.raises(ValueError, match="implementation"):
            _linear(x, chunk_size=8, implementation=impl)
    with pytest.raises(ValueError, match="multiple of 8"):
        _linear(x, chunk_size=12, implementation="interpret")
    m = mlp_inputs(0, 1, 20, 1, 32, 64)
    with pytest.raises(ValueError, match="GPU backend"):
        mlp_chunk_update(m["q"], m["k"], m["v"], m["eta"], m["alpha"], m["beta"], m["params"],
                         implementation="pallas_gpu")


def test_auto_picks_pallas_on_accelerators_and_falls_back_with_warning(monkeypatch):
    """With the backend reported as TPU / GPU, auto picks the kernel when it can tile the shapes,
    and otherwise warns and runs xla (results equal to xla)."""
    for platform, kernel in (("tpu", "pallas_tpu"), ("gpu", "pallas_gpu")):
        monkeypatch.setattr(_dispatch, "backend_platform", lambda p=platform: p)
        assert _dispatch.resolve_implementation("auto", lambda name: None, "op") == kernel
        with pytest.warns(UserWarning, match="falls back to 'xla'"):
            got = _dispatch.resolve_implementation("auto", lambda name: "no tiling", "op")
        assert got == "xla"
    monkeypatch.setattr(_dispatch, "backend_platform", lambda: "tpu")
    x = linear_inputs(1, 1, 20, 1, 32, 32)
    with pytest.warns(UserWarning, match="multiple of 8"):
        fallback = _linear(x, chunk_size=12)
    monkeypatch.undo()
    want = _linear(x, chunk_size=12, implementation="xla")
    for a, b in zip(fallback, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_all_implementations_agree():
    """reference, xla and interpret give the same outputs and states (float32, 1e-5), for both
    ops, on one shape."""
    x = linear_inputs(2, 1, 24, 2, 32, 32)
    ref = _linear(x, chunk_size=8, implementation="reference")
    for impl in ("xla", "interpret"):
        assert_tree_close(_linear(x, chunk_size=8, implementation=impl), ref, 1e-5, impl)
    m = mlp_inputs(2, 1, 24, 1, 32, 32)

    def mlp(impl):
        fn = jax.jit(lambda q, k, v, eta, alpha, beta, params: mlp_chunk_update(
            q, k, v, eta, alpha, beta, params, None, chunk_size=8, implementation=impl))
        return fn(m["q"], m["k"], m["v"], m["eta"], m["alpha"], m["beta"], m["params"])

    ref = mlp("reference")
    for impl in ("xla", "interpret"):
        assert_tree_close(mlp(impl), ref, 1e-5, impl)
    assert jnp.asarray(ref[0]).dtype == jnp.float32
