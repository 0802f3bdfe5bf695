"""Placing optimizer state on a device mesh (docs/training.md, "Pitfalls of this JAX stack", 2).

`tx.init` on sharded params gives param-shaped state leaves the params' shardings, but scalar
leaves (step counts) and leaves built from constants (e.g. DMGD's `w₂`) land on device 0, and a
jit with mesh `in_shardings` then fails with "incompatible devices". `init_on_mesh` initialises and
replicates every leaf that is not yet on the mesh.
"""
from __future__ import annotations

import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def place_on_mesh(tree: optax.OptState, mesh: Mesh) -> optax.OptState:
    """Replicates (`NamedSharding(mesh, P())`) every array leaf not already sharded on `mesh`."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(x):
        if not isinstance(x, jax.Array):
            return x
        sharding = x.sharding
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return x
        return jax.device_put(x, replicated, may_alias=False)

    return jax.tree.map(place, tree)


def init_on_mesh(tx: optax.GradientTransformation, params: optax.Params,
                 mesh: Mesh) -> optax.OptState:
    """`tx.init(params)` for params already placed on `mesh`, with every state leaf on the mesh.

    Param-shaped leaves follow the params' shardings; every other leaf is replicated.
    """
    return place_on_mesh(tx.init(params), mesh)
