"""The train state: a pytree of arrays, and the codec between an nnx model and flat params.

The jitted step is a pure function of arrays: `nnx.split(model, nnx.Param, ...)` gives a
graphdef (static), the trainable params (an nnx.State) and the rest (non-trainable variables;
empty for the decoders here). The params travel as a flat dict {"blocks/0/mixer/w_q/kernel":
array}: optax masks and labels are keyed by these names, and orbax saves them as they are.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

Params = dict[str, jax.Array]


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def _unwrap(x):
    if not _is_var(x):
        return x
    return x.get_value() if hasattr(x, "get_value") else x.raw_value


class ParamCodec:
    """Flat dict ↔ nnx.State of a model's params (same leaf order as `jax.tree.leaves`)."""

    def __init__(self, param_state: nnx.State):
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(param_state)
        # the same tree with each nnx.Variable as one leaf (for trees of shardings, periods …)
        self.var_treedef = jax.tree.structure(param_state, is_leaf=_is_var)
        names = []
        for path, _ in leaves:
            keys = [_key_name(k) for k in path]
            if keys and keys[-1] == "value":  # nnx.Variable flattens to its value
                keys = keys[:-1]
            names.append("/".join(keys))
        if len(set(names)) != len(names):
            raise ValueError("parameter names are not unique after flattening")
        self.names: tuple[str, ...] = tuple(names)

    def to_flat(self, state: Any) -> dict[str, Any]:
        """nnx.State (or a tree of the same structure with any leaf in place of each
        Variable) → {name: leaf}."""
        leaves = self.var_treedef.flatten_up_to(state)
        return {n: _unwrap(x) for n, x in zip(self.names, leaves)}

    def to_state(self, flat: dict[str, Any]) -> nnx.State:
        """{name: leaf} → nnx.State (carrying the variables' metadata)."""
        missing = set(self.names) - set(flat)
        if missing:
            raise KeyError(f"missing parameters: {sorted(missing)[:5]}")
        return jax.tree.unflatten(self.treedef, [flat[n] for n in self.names])


class TrainState(NamedTuple):
    """Everything the step reads and writes (a pytree of arrays).

    step: int32 scalar, batches consumed (bad steps included).
    params: flat {name: array} (float32 by default, `model.param_dtype`).
    opt_state: the optax state of `make_optimizer`.
    bad_steps: int32 scalar, consecutive non-finite steps (0 after a good step).
    """

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    bad_steps: jax.Array


def init_train_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    """A fresh TrainState (step 0, fresh optimizer state)."""
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      bad_steps=jnp.zeros([], jnp.int32))


def to_host(tree: Any) -> Any:
    """Replicated (or single-device) jax arrays → numpy, also when other processes hold other
    shards (multi-host: `jax.device_get` refuses arrays that are not fully addressable)."""
    import numpy as np

    def one(x):
        if isinstance(x, jax.Array):
            return np.asarray(x.addressable_data(0)) if x.is_fully_replicated else np.asarray(x)
        return x

    return jax.tree.map(one, tree)


def all_finite(tree: Any) -> jax.Array:
    """True iff every float leaf of `tree` is finite (a bool scalar)."""
    oks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
           if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(oks)) if oks else jnp.array(True)


__all__ = ["ParamCodec", "Params", "TrainState", "all_finite", "init_train_state", "to_host"]
