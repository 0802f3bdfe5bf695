"""Version shims, in one place (jax 0.10 / 0.12, flax 0.12.8 / 0.12.12; docs/training.md,
"Pitfalls of this JAX stack").

Keep this small: add a shim only where the two stacks really differ.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh


def make_mesh(axis_sizes: Sequence[int], axis_names: Sequence[str], devices=None) -> Mesh:
    """`jax.make_mesh` with Auto (GSPMD-style) axes on both stacks.

    jax ≥ 0.5 defaults to Explicit axes, and jax 0.12 renamed the first parameter
    (`axis_shapes` → `axis_sizes`), so it is passed positionally.
    """
    kw = {} if devices is None else {"devices": devices}
    return jax.make_mesh(tuple(axis_sizes), tuple(axis_names),
                         axis_types=(AxisType.Auto,) * len(axis_names), **kw)
