"""Deep momentum gradient descent, DMGD (design §2.6, Eq. 50; D28).

The momentum is a small neural memory applied to the current gradient `u`:

    W_{i+1} = W_i + m_{φ_{i+1}}(u_i),   φ_{i+1} = β φ_i − η ∇_φ L⁽²⁾(m_{φ_i}; u_i).   # NL Eq. 50

D28 fixes the memory: per coordinate `m_φ(u) = b + w₁ σ(w₂ u)`, `b` shaped like the parameter
(the classical momentum buffer), `w₂ ∈ R^h`, `w₁ ∈ R^{1×h}` shared by the coordinates of a tensor
(gradients averaged over coordinates), `h = 8`, σ = GELU, dot objective `⟨m_φ(u), u⟩`.

As everywhere in hope_jax.optim the transform outputs a descent direction and the learning rate
is applied last. The memory therefore models the direction `d_φ(u) = b + w₁ σ(w₂ u)` (NL's
`m = −η d`), with the dot objective `L = −⟨d_φ(u), u⟩` (option L2: `½‖d_φ(u) − u‖²`):

    b  ← β b − ζ_b ∇_b L                   (dot: ∇_b L = −u, so b ← β b + u: momentum)
    w  ← β_w w − ζ_w ∇_w L                  (w = w₁, w₂; gradients averaged over coordinates)
    output d_{φ_{i+1}}(u_i)                 (the updated memory read at the current gradient)

With `w₁ = 0` frozen this is exactly momentum (`optax.trace`). With the defaults
`ζ_b = ζ_w = 1`, `β_w = β`, it is NL Eq. 50 for a constant η under the change of variables
`b_NL = −η b`, `w₁_NL = −η w₁`, except that NL's `w₂` step is then `η²` (docs/optimizers.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hope_jax.optim._util import with_learning_rate

DMGDObjective = Literal["dot", "l2"]

#: w₂ initialisation: a fixed spread of input scales (h = 8, D28). w₁ starts at 0, so DMGD starts
#: as momentum; w₂ must be nonzero or the memory's gradients vanish forever.
DEFAULT_W2_INIT: tuple[float, ...] = tuple(float(x) for x in np.linspace(-1.0, 1.0, 8))

_ACTIVATIONS = {
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
}


class DMGDState(NamedTuple):
    """State of `scale_by_dmgd`: the memory φ = (b, w₁, w₂) of every parameter tensor."""

    b: optax.Updates  # momentum buffer, shaped like the params
    w1: optax.Updates  # (h,) per parameter tensor: output weights of the memory
    w2: optax.Updates  # (h,) per parameter tensor: input weights of the memory


def _memory(u: jax.Array, w2: jax.Array, act) -> tuple[jax.Array, jax.Array]:
    """σ(w₂ u) and σ'(w₂ u) per coordinate: shapes `u.shape + (h,)`."""
    z = u[..., None] * w2
    return jax.jvp(act, (z,), (jnp.ones_like(z),))


# Kept as one function (issue 20): its length is the nested init/update closures of the optax
# transform, which read NL Eq. 50's memory update and its descent direction in order.
def scale_by_dmgd(
    beta: float = 0.9,
    inner_lr: float = 1.0,
    buffer_lr: float = 1.0,
    memory_beta: float | None = None,
    objective: DMGDObjective = "dot",
    activation: str = "gelu",
    w1_init: float = 0.0,
    w2_init: Sequence[float] = DEFAULT_W2_INIT,
    train_memory: bool = True,
) -> optax.GradientTransformation:
    """DMGD as a descent-direction transform (NL Eq. 50, D28).

    Args:
      beta: retention β of the buffer `b` (and of `w₁, w₂` unless `memory_beta` is given).
      inner_lr: ζ_w, step size of `w₁, w₂` on the internal objective.
      buffer_lr: ζ_b, step size of `b` (1 makes the dot objective's `b` exactly momentum).
      memory_beta: retention β_w of `w₁, w₂`; None uses `beta` (Eq. 50 has one β for all of φ).
      objective: "dot" (`−⟨d, u⟩`, D28 default) or "l2" (`½‖d − u‖²`).
      activation: "gelu" (exact, default), "gelu_tanh", "tanh" or "silu".
      w1_init: initial value of every entry of `w₁` (0: the memory starts as momentum).
      w2_init: initial `w₂`; its length is the hidden size h (a tuple keeps h static under
        `optax.inject_hyperparams`).
      train_memory: False freezes `w₁, w₂` at their initial values.
    """
    if objective not in ("dot", "l2"):
        raise ValueError(f"objective must be 'dot' or 'l2', got {objective!r}")
    act = _ACTIVATIONS[activation]
    w2_values = tuple(float(x) for x in w2_init)
    hidden = len(w2_values)
    beta_w = beta if memory_beta is None else memory_beta

    def init_fn(params: optax.Params) -> DMGDState:
        return DMGDState(
            b=jax.tree.map(jnp.zeros_like, params),
            w1=jax.tree.map(lambda p: jnp.full((hidden,), w1_init, p.dtype), params),
            w2=jax.tree.map(lambda p: jnp.asarray(w2_values, p.dtype), params),
        )

    def leaf_update(u, b, w1, w2):
        s, ds = _memory(u, w2, act)  # σ(w₂u), σ'(w₂u): u.shape + (h,)
        n = u.size
        axes = tuple(range(u.ndim))
        if objective == "dot":  # L = −⟨b + w₁σ(w₂u), u⟩
            grad_b = -u
            weight = -u  # ∂L/∂d per coordinate
        else:  # L = ½‖b + w₁σ(w₂u) − u‖²
            residual = b + jnp.sum(w1 * s, axis=-1) - u
            grad_b = residual
            weight = residual
        grad_w1 = jnp.sum(weight[..., None] * s, axis=axes) / n
        grad_w2 = jnp.sum(weight[..., None] * w1 * ds * u[..., None], axis=axes) / n
        # NL Eq. 50: φ ← β φ − η ∇_φ L⁽²⁾(m_φ; u)
        b_new = beta * b - buffer_lr * grad_b
        if train_memory:
            w1_new = beta_w * w1 - inner_lr * grad_w1
            w2_new = beta_w * w2 - inner_lr * grad_w2
        else:
            w1_new, w2_new = w1, w2
        s_new, _ = _memory(u, w2_new, act)
        out = b_new + jnp.sum(w1_new * s_new, axis=-1)  # d_{φ_{i+1}}(u_i)
        return out, b_new, w1_new, w2_new

    def update_fn(updates, state, params=None):
        del params
        flat_u, treedef = jax.tree.flatten(updates)
        results = [
            leaf_update(u, b, w1, w2)
            for u, b, w1, w2 in zip(
                flat_u, treedef.flatten_up_to(state.b), treedef.flatten_up_to(state.w1),
                treedef.flatten_up_to(state.w2),
            )
        ]
        out, b, w1, w2 = (treedef.unflatten(list(r)) for r in zip(*results)) if results else (
            updates, state.b, state.w1, state.w2)
        return out, DMGDState(b=b, w1=w1, w2=w2)

    return optax.GradientTransformation(init_fn, update_fn)


def dmgd(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    inner_lr: float = 1.0,
    buffer_lr: float = 1.0,
    memory_beta: float | None = None,
    objective: DMGDObjective = "dot",
    activation: str = "gelu",
    w1_init: float = 0.0,
    w2_init: Sequence[float] = DEFAULT_W2_INIT,
    train_memory: bool = True,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Complete optimizer: `W ← W − η (d_{φ_{i+1}}(g_i) + λW)` with DMGD's memory (NL Eq. 50,
    D28)."""
    return with_learning_rate(
        scale_by_dmgd(beta, inner_lr, buffer_lr, memory_beta, objective, activation, w1_init,
                      w2_init, train_memory),
        learning_rate,
        weight_decay,
    )
