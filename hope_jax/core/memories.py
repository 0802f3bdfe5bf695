"""Memory architectures of a level: the parametric map M(x) whose weights are the level's state.

Every memory here is an MLP, `M(x) = [x +] W_L σ(… σ(W_1 x))`, one instance per head:

* `matrix_memory()` is depth 1 without residual: `M(x) = W x` (design §0, §4);
* `residual_mlp_memory()` is the residual 2-layer memory `x + W₁ σ(W₂ x)` of Titans and Hope
  (design §3.1, Eq. 89 = 91), with depth, hidden width and activation configurable.

Parameters are an explicit tuple of matrices, **input side first**: `params[0]` is `W₂` of
design §3.1 (the layer that reads the key, where the DGD preconditioner acts, D3) and `params[-1]`
is `W₁`. Layer `l` has shape `[out_l, in_l]` and is applied as `z_l = W_l h_{l-1}` (columns),
i.e. `z = h @ W.T` for row-major token batches.

All layer gradients are outer products, `∇_{W_l} ℓ = δ_l h_{l-1}ᵀ` (design §3.1), which is what lets
the chunked scan avoid materialising per-token gradients (see `closed_form.py`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
MemoryParams = tuple  # tuple[Array, ...], input-side layer first


class ForwardCache(NamedTuple):
    """Per-layer activations of one forward pass over a batch of rows.

    inputs[l]: `h_{l-1}`, the input of layer l, shape [N, in_l] (inputs[0] is the key).
    preacts[l]: `z_l = h_{l-1} W_lᵀ`, shape [N, out_l].
    """

    inputs: tuple
    preacts: tuple


def _activation_derivative(activation: Callable[[Array], Array], z: Array) -> Array:
    """σ'(z) elementwise, by forward-mode autodiff of the (elementwise) activation."""
    return jax.jvp(activation, (z,), (jnp.ones_like(z),))[1]


@dataclasses.dataclass(frozen=True)
class MLPMemory:
    """`M(x) = [x +] W_L σ(… σ(W_1 x))` per head (design §3.1, §6.3).

    Attributes:
      depth: number of weight matrices L ≥ 1 (1 = linear / matrix memory).
      expansion: hidden width as a multiple of the input width (ignored when `hidden` is set).
      hidden: explicit hidden width of the inner layers.
      activation: elementwise nonlinearity σ between layers (GELU by default, D11).
      residual: add the input to the output (`x + …`); needs d_in == d_out.
      input_init_std: std of the input-side layer W_1 at init; None = 1/sqrt(d_in) (D19).
      output_init_std: std of the other layers at init (D19: 0.02). For depth 1 the
        input-side rule applies.
    """

    depth: int = 2
    expansion: float = 4.0
    hidden: int | None = None
    activation: Callable[[Array], Array] = jax.nn.gelu
    residual: bool = True
    input_init_std: float | None = None
    output_init_std: float = 0.02

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"MLPMemory.depth must be >= 1, got {self.depth}")
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"MLPMemory.hidden must be >= 1, got {self.hidden}")
        if self.expansion <= 0:
            raise ValueError(f"MLPMemory.expansion must be > 0, got {self.expansion}")

    # -- shapes ------------------------------------------------------------------------------
    def hidden_width(self, d_in: int) -> int:
        return self.hidden if self.hidden is not None else max(1, int(round(self.expansion * d_in)))

    def layer_shapes(self, d_in: int, d_out: int) -> list[tuple[int, int]]:
        """[(out_l, in_l)] for l = 1..L, input side first."""
        if self.residual and d_in != d_out:
            raise ValueError(
                f"a residual memory needs key width == value width, got d_in={d_in}, d_out={d_out}")
        widths = [d_in] + [self.hidden_width(d_in)] * (self.depth - 1) + [d_out]
        return [(widths[i + 1], widths[i]) for i in range(self.depth)]

    def check_params(self, params: MemoryParams, d_in: int, d_out: int,
                     where: str = "params") -> None:
        """Raises ValueError unless `params` (trailing dims) match this memory for (d_in, d_out)."""
        shapes = self.layer_shapes(d_in, d_out)
        if not isinstance(params, (tuple, list)) or len(params) != len(shapes):
            raise ValueError(f"{where}: expected a tuple of {len(shapes)} layer matrices for a "
                             f"depth-{self.depth} memory, got {type(params).__name__} "
                             f"of length "
                             f"{len(params) if isinstance(params, (tuple, list)) else '?'}")
        for l, (w, shape) in enumerate(zip(params, shapes)):
            if tuple(w.shape[-2:]) != shape:
                raise ValueError(f"{where}[{l}]: expected trailing shape {shape} for keys of width "
                                 f"{d_in} and values of width {d_out}, got {tuple(w.shape)}")

    # -- init ----------------------------------------------------------------------------------
    def init(self, key: Array, num_heads: int, d_in: int, d_out: int | None = None,
             dtype=jnp.float32) -> MemoryParams:
        """Initial (meta-learned) memory, one per head: a tuple of [num_heads, out_l, in_l]."""
        d_out = d_in if d_out is None else d_out
        shapes = self.layer_shapes(d_in, d_out)
        keys = jax.random.split(key, len(shapes))
        params = []
        for l, ((o, i), k) in enumerate(zip(shapes, keys)):
            if l == 0:
                std = self.input_init_std if self.input_init_std is not None else i ** -0.5
            else:
                std = self.output_init_std
            params.append(std * jax.random.normal(k, (num_heads, o, i), dtype))
        return tuple(params)

    # -- single-head maps (rows are tokens) ----------------------------------------------------
    def apply(self, params: MemoryParams, x: Array) -> Array:
        """M(x) for one head: params[l] [out_l, in_l], x [..., d_in] → [..., d_out]."""
        h = x
        for l, w in enumerate(params):
            z = h @ w.T
            h = self.activation(z) if l < len(params) - 1 else z
        return x + h if self.residual else h

    def forward_cached(self, params: MemoryParams, x: Array) -> tuple[Array, ForwardCache]:
        """M(x) for rows x [N, d_in], keeping every layer's input and pre-activation."""
        inputs, preacts = [], []
        h = x
        for l, w in enumerate(params):
            inputs.append(h)
            z = h @ w.T
            preacts.append(z)
            h = self.activation(z) if l < len(params) - 1 else z
        y = x + h if self.residual else h
        return y, ForwardCache(tuple(inputs), tuple(preacts))

    def backward(self, params: MemoryParams, cache: ForwardCache, error: Array) -> tuple:
        """Output-side errors δ_l [N, out_l] for every layer, given e = ∂ℓ/∂y [N, d_out].

        Design §3.1: ∇_{W_l} ℓ = δ_l h_{l-1}ᵀ with δ_L = e and δ_l = σ'(z_l) ⊙ (W_{l+1}ᵀ δ_{l+1});
        the residual branch does not touch the weights.
        """
        deltas = [None] * len(params)
        delta = error
        for l in range(len(params) - 1, -1, -1):
            if l < len(params) - 1:
                delta = _activation_derivative(self.activation, cache.preacts[l]) * delta
            deltas[l] = delta
            if l > 0:
                delta = delta @ params[l]
        return tuple(deltas)


def matrix_memory(init_std: float | None = None) -> MLPMemory:
    """The linear memory `M(k) = W k` (W ∈ R^{d_v×d_k}); design §0 and §4. init_std: the std of
    W at init (None: 1/sqrt(d_k), D19; 0: the zero state of DeltaNet-style memories)."""
    return MLPMemory(depth=1, residual=False, input_init_std=init_std)


def residual_mlp_memory(expansion: float = 4.0, depth: int = 2, hidden: int | None = None,
                        activation: Callable[[Array], Array] = jax.nn.gelu) -> MLPMemory:
    """The residual MLP memory `x + W₁ σ(W₂ x)` (NL Eq. 89; design §3.1), expansion 4 by default."""
    return MLPMemory(depth=depth, expansion=expansion, hidden=hidden, activation=activation,
                     residual=True)


def multi_head_apply(memory: MLPMemory, params: MemoryParams, x: Array) -> Array:
    """M_h(x_h) for every head: params[l] [H, out, in], x [..., H, d_in] → [..., H, d_out]."""
    lead = x.ndim - 2
    fn = lambda p, xh: memory.apply(p, xh)
    out = jax.vmap(fn, in_axes=(0, lead), out_axes=lead)(params, x)
    return out

