"""SwiGLU MLP (Llama / Transformer++ feed-forward; the "w/o CMS" MLP of D20).

y = W_down( SiLU(x W_gate) ⊙ (x W_up) ), hidden width roundup_64((8/3)·d) by default (D20).
It follows the mixer interface (`__call__(x, state) -> (y, state)`) so that the decoder's MLP
slot can hold a stateful CMS chain instead; SwiGLU's state is the empty tuple.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.layers.params import Dense

Array = jax.Array


def swiglu_hidden(d: int, multiple: int = 64, ratio: float = 8.0 / 3.0) -> int:
    """roundup_multiple((8/3)·d) (D20)."""
    return int(-(-int(round(ratio * d)) // multiple) * multiple)


class SwiGLU(nnx.Module):
    """SwiGLU feed-forward with W_gate, W_up [d, f] ("embed", "mlp") and W_down [f, d]."""

    def __init__(self, d: int, hidden: int | None = None, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32, out_init_std: float | None = None):
        f = swiglu_hidden(d) if hidden is None else hidden
        self.hidden = f
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.w_gate = Dense(d, f, ("embed", "mlp"), **kw)
        self.w_up = Dense(d, f, ("embed", "mlp"), **kw)
        self.w_down = Dense(f, d, ("mlp", "embed"), init_std=out_init_std, **kw)

    def init_state(self, batch_size: int, max_len: int = 0) -> tuple:
        return ()

    def __call__(self, x: Array, state=None) -> tuple[Array, tuple | None]:
        """x [B, T, d] → (y [B, T, d], state unchanged)."""
        h = jax.nn.silu(self.w_gate(x)) * self.w_up(x)
        return self.w_down(h), state


@dataclasses.dataclass(frozen=True)
class SwiGLUConfig:
    """The decoder's default MLP slot: SwiGLU of width `hidden` (default roundup_64(8d/3), D20)."""

    hidden: int | None = None

    def build(self, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              param_dtype=jnp.float32) -> SwiGLU:
        return SwiGLU(d_model, self.hidden, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
