"""The ops run inside shard_map over batch and heads (check_vma=False, see `_compat.shard_map`):
on a (data=2, model=4) mesh of fake CPU devices, the interpreted kernel with its custom_vjp gives
the same values and gradients as the unsharded xla path."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from hope_jax.kernels import _compat
from hope_jax.kernels.linear_chunk_update import linear_chunk_update
from kernel_cases import assert_tree_close, linear_inputs, probe_loss


def test_linear_op_in_shard_map_over_batch_and_heads():
    """Values and gradients (q, k, v, η, α, w0) of the sharded interpret run equal unsharded xla."""
    mesh = jax.make_mesh((2, 4), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    x = linear_inputs(0, 2, 24, 4, 32, 32)
    seq, gate, state = P("data", None, "model", None), P("data", None, "model"), P("data", "model")

    def op(impl):
        def f(q, k, v, eta, alpha, w0):
            return linear_chunk_update(q, k, v, eta, alpha, w0, chunk_size=8, implementation=impl)
        return f

    sharded = _compat.shard_map(op("interpret"), mesh=mesh,
                                in_specs=(seq, seq, seq, gate, gate, state),
                                out_specs=(seq, state))
    args = [x[n] for n in ("q", "k", "v", "eta", "alpha", "w0")]

    def scalar(fn):
        return jax.jit(jax.value_and_grad(lambda *a: probe_loss(*fn(*a)), argnums=tuple(range(6))))

    got = scalar(sharded)(*args)
    want = scalar(op("xla"))(*args)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
    assert_tree_close(got[1], want[1], 1e-5, "grads")
    y, w = jax.jit(sharded)(*args)
    assert_tree_close((y, w), jax.jit(op("xla"))(*args), 1e-5, "values")
    assert jnp.isfinite(y).all()


def test_mlp_op_in_shard_map_over_batch_and_heads():
    """The MLP op (Titans: momentum + retention, no DGD) sharded over batch and heads, interpreted:
    values and gradients (q, k, v, gates, memory, momentum) equal the unsharded xla path."""
    from hope_jax.kernels.mlp_chunk_update import mlp_chunk_update
    from kernel_cases import mlp_inputs

    mesh = jax.make_mesh((2, 4), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    x = mlp_inputs(0, 2, 13, 4, 16, 32)
    seq, gate, state = P("data", None, "model", None), P("data", None, "model"), P("data", "model")
    names = ("q", "k", "v", "eta", "alpha", "beta", "params", "momentum")

    def op(impl):
        def f(q, k, v, eta, alpha, beta, params, momentum):
            return mlp_chunk_update(q, k, v, eta, alpha, beta, params, momentum, chunk_size=8,
                                    dgd=False, normalize=False, implementation=impl)
        return f

    sharded = _compat.shard_map(op("interpret"), mesh=mesh,
                                in_specs=(seq, seq, seq, gate, gate, gate, (state, state),
                                          (state, state)),
                                out_specs=(seq, (state, state), (state, state)))
    args = [x[n] for n in names]

    def scalar(fn):
        def loss(*a):
            y, params, momentum = fn(*a)
            return probe_loss(y, (params, momentum))
        return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(names)))))

    got = scalar(sharded)(*args)
    want = scalar(op("xla"))(*args)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
    assert_tree_close(got[1], want[1], 1e-5, "grads")
    assert_tree_close(jax.jit(sharded)(*args), jax.jit(op("xla"))(*args), 1e-5, "values")
