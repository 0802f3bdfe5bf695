"""Parameters with logical axis names, and the dense projection every layer uses.

Every parameter is an `nnx.Param` carrying `logical_axes` (one name per dimension) that
`hope_jax.sharding.rules` maps to mesh axes. Parameters are stored in `param_dtype` (float32 by
default); activations run in the layer's compute `dtype`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
Initializer = Callable[..., Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str | None],
          dtype=jnp.float32) -> nnx.Param:
    """An `nnx.Param` of `shape` from `init(key, shape, dtype)`, annotated with logical `axes`."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(axes))


def normal(std: float) -> Initializer:
    return nnx.initializers.normal(std)


def constant(value: float) -> Initializer:
    return lambda key, shape, dtype: jnp.full(shape, value, dtype)


class Dense(nnx.Module):
    """`y = x W (+ b)`, W [d_in, d_out] with logical axes `axes` (design §0: `u W`).

    Init: N(0, init_std²) with init_std = 1/sqrt(d_in) unless given.
    """

    def __init__(self, d_in: int, d_out: int, axes: tuple[str | None, str | None], *,
                 rngs: nnx.Rngs, use_bias: bool = False, init_std: float | None = None,
                 bias_init: float = 0.0, dtype=jnp.float32, param_dtype=jnp.float32):
        std = d_in ** -0.5 if init_std is None else init_std
        init = normal(std) if std > 0 else nnx.initializers.zeros
        self.kernel = param(rngs, init, (d_in, d_out), axes, param_dtype)
        self.bias = (param(rngs, constant(bias_init), (d_out,), (axes[1],), param_dtype)
                     if use_bias else None)
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        """x [..., d_in] → [..., d_out] in the compute dtype."""
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y
