"""Small helpers shared by the deep optimizers (not part of the public API)."""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import optax


def is_static_zero(x: Any) -> bool:
    """True only for a Python number equal to 0 (a traced hyperparameter is never 'static zero').

    Lets constructors drop a transform (e.g. weight decay) when it is statically off, while staying
    usable under `optax.inject_hyperparams`, which passes numeric arguments as traced arrays.
    """
    return isinstance(x, numbers.Number) and not isinstance(x, bool) and x == 0


def bias_correction(moment: jax.Array, decay: jax.Array | float, count: jax.Array) -> jax.Array:
    """`moment / (1 − decay^count)`, the standard EMA bias correction (count ≥ 1)."""
    correction = 1 - jnp.asarray(decay, moment.dtype) ** count.astype(moment.dtype)
    return moment / correction


def with_learning_rate(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float | jax.Array = 0.0,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """`chain(direction, [add_decayed_weights], scale_by_learning_rate)`: a complete optimizer.

    The learning rate (float or optax schedule, evaluated at the global step) multiplies the whole
    output, as in Muon (design §2.7); weight decay is decoupled (`W ← W − η(u + λW)`).
    """
    parts = [direction]
    if not is_static_zero(weight_decay):
        parts.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)
