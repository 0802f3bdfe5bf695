"""Bad input raises ValueError naming the argument and the shapes, before any heavy tracing."""
import jax
import jax.numpy as jnp
import pytest

from hope_jax import core

B, T, H, D = 2, 5, 3, 4


def _setup(optimizer=None):
    level = core.Level(core.residual_mlp_memory(expansion=1), core.l2(), optimizer or core.dgd(),
                       chunk_size=2)
    params = level.memory.init(jax.random.PRNGKey(0), H, D, D)
    x = jnp.ones((B, T, H, D))
    g = jnp.full((B, T, H), 0.5)
    return level, level.init_state(params, B), dict(q=x, k=x, v=x, eta=g, alpha=g, beta=g)


CASES = [
    (dict(k=jnp.ones((B, T, H, D + 1))), "q and k must have the same shape"),
    (dict(q=jnp.ones((B, T, H))), r"q must have shape \[batch, time, heads, dim\]"),
    (dict(v=jnp.ones((B, T + 1, H, D))), "v must have shape"),
    (dict(eta=jnp.ones((B, T, H, 1))), r"eta must have shape \[B, T, H\] = \(2, 5, 3\)"),
    (dict(alpha=jnp.ones((B, T))), "alpha must have shape"),
    (dict(beta=None), "beta is required"),
    (dict(q=jnp.ones((B, T, H, D), jnp.int32)), "q must have a floating dtype, got int32"),
    (dict(eta=jnp.ones((B, T, H), jnp.int32)), "eta must have a floating dtype"),
    (dict(q=jnp.ones((B, T, H + 1, D)), k=jnp.ones((B, T, H + 1, D)), v=jnp.ones((B, T, H + 1, D)),
          eta=jnp.ones((B, T, H + 1)), alpha=jnp.ones((B, T, H + 1)), beta=jnp.ones((B, T, H + 1))),
     r"state.memory\[0\] must have leading dims \[B, H\] = \(2, 4\)"),
    (dict(q=jnp.ones((B, T, H, 3)), k=jnp.ones((B, T, H, 3)), v=jnp.ones((B, T, H, 3))),
     r"state.memory\[0\]: expected trailing shape"),
]


@pytest.mark.fast
@pytest.mark.parametrize("override, match", CASES)
@pytest.mark.parametrize("scan", [core.chunked_scan, core.reference_scan])
def test_bad_inputs_raise(override, match, scan):
    level, state, args = _setup()
    args.update(override)
    with pytest.raises(ValueError, match=match):
        scan(level, state, **args)


@pytest.mark.fast
@pytest.mark.parametrize("kwargs, match", [
    (dict(chunk_size=0), "chunk_size must be a positive int"),
    (dict(chunk_size=2.0), "chunk_size must be a positive int"),
    (dict(read="running"), "read must be one of"),
    (dict(gradient="none"), "gradient must be one of"),
    (dict(method="pallas"), "method must be one of"),
])
def test_bad_level_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        core.Level(core.matrix_memory(), core.l2(), core.gd(), **kwargs)


@pytest.mark.fast
def test_linear_method_needs_a_linear_memory():
    with pytest.raises(ValueError, match="needs a depth-1 memory"):
        core.Level(core.residual_mlp_memory(), core.l2(), core.gd(), method="linear")


@pytest.mark.fast
def test_wrong_state_type_and_param_count():
    level, state, args = _setup()
    with pytest.raises(ValueError, match="state must be a LevelState"):
        core.chunked_scan(level, (state.memory,), **args)
    bad = state._replace(memory=state.memory[:1], snapshot=state.snapshot[:1])
    with pytest.raises(ValueError, match="expected a tuple of 2 layer matrices"):
        core.chunked_scan(level, bad, **args)
