"""The decoder LM (D36): embedding → blocks → final RMSNorm → LM head (untied by default).

Each block is Llama-style pre-norm (D11):

    h ← h + mixer(RMSNorm(h))          the mixer slot: attention, a level mixer, Titans, Hope …
    h ← h + mlp(RMSNorm(h))            the MLP slot: SwiGLU, or a CMS chain (design §5, D20)

Blocks are chosen by config: `DecoderConfig.mixers` is a pattern of mixer configs repeated
cyclically over `num_blocks` (e.g. `parse_pattern("2 titans : 1 attention", table)`). Any
config with `build(d_model, *, rngs, dtype, param_dtype)` returning a module that follows the
mixer interface (docs/layers.md) plugs into either slot.

Recurrent inference: `prefill(tokens, max_len)` returns logits and a cache (one state per block);
`step(token, cache)` continues by one token. prefill + steps equals the full forward.

Sharding: the residual stream h [B, T, d] is constrained to the logical axes (batch, length,
embed) after the embedding and after each residual add (`sharding.rules.constrain`), when the
step is traced under the mesh (`train/build.py`, `_traced_on`); without a mesh in context
these are no-ops.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hope_jax.core.fresh_form import compact, expand, fresh_form_like
from hope_jax.layers.mlp import SwiGLUConfig
from hope_jax.layers.norms import RMSNorm
from hope_jax.layers.params import Dense, normal, param
from hope_jax.sharding.rules import constrain

Array = jax.Array
# The values DecoderConfig takes (config validation reads these tables).
# Compute / parameter dtypes: float64 serves the float64 reference checks (with jax_enable_x64);
# a training config chooses from TRAINING_DTYPES.
DTYPES = ("float32", "bfloat16", "float64")
TRAINING_DTYPES = ("float32", "bfloat16")
REMAT_MODES = ("none", "block", "full")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """A decoder LM.

    Attributes:
      vocab_size, d_model, num_blocks: V, d, number of blocks.
      mixers: the mixer pattern, a tuple of mixer configs repeated cyclically over the blocks.
      mlp: the MLP-slot config (SwiGLU by default; the CMS replaces it), or a tuple (cyclic).
      tie_embeddings: LM head = embeddingᵀ (default untied, D36).
      max_len: the training context T (also the default cache length of `prefill`).
      dtype / param_dtype: compute and parameter dtypes (`DTYPES`: "float32", "bfloat16", or
        "float64" for reference checks).
      norm_eps: RMSNorm ε.
      remat: `REMAT_MODES`: "none"; "block" to recompute each block's activations in the
        backward pass (`nnx.remat` per block: activation memory O(blocks · B·T·d) instead of every
        intermediate; memory levels keep their own per-chunk remat either way); or "full": the
        training forward reads the sequence `remat_segment` tokens at a time, carrying the
        recurrent state, and the backward recomputes one segment at a time (blocks remat'd
        inside it), so only the states at segment boundaries are stored (docs/core.md, "Full
        remat: the model a segment at a time").
      remat_segment: the segment length of remat "full"; 0 picks T/4 (else T/2) when that is a
        whole number of every memory level's chunks (`Decoder.state_alignment`), else T
        (block remat alone).
      scan_blocks: stack the (identical) blocks' parameters on a leading axis and run them with
        `nnx.scan` (one block is traced and compiled, whatever num_blocks); needs a single mixer
        and MLP config. Same function as the unrolled model (see `stack_blocks`).
      name: a label (presets set it).
    """

    vocab_size: int
    d_model: int
    num_blocks: int
    mixers: tuple
    mlp: Any = SwiGLUConfig()
    tie_embeddings: bool = False
    max_len: int = 64
    dtype: str = "float32"
    param_dtype: str = "float32"
    norm_eps: float = 1e-6
    remat: str = "none"
    remat_segment: int = 0
    scan_blocks: bool = False
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.mixers, tuple) or not self.mixers:
            raise ValueError("DecoderConfig.mixers must be a non-empty tuple of mixer configs")
        if self.num_blocks < 1 or self.d_model < 1 or self.vocab_size < 1:
            raise ValueError("num_blocks, d_model and vocab_size must be positive")
        if self.remat not in REMAT_MODES:
            raise ValueError(f"DecoderConfig.remat: expected one of {REMAT_MODES}, got "
                             f"{self.remat!r}")
        r = self.remat_segment
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"DecoderConfig.remat_segment must be an int ≥ 0, got {r!r}")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ValueError(f"DecoderConfig.{key}: expected one of {DTYPES}, got "
                                 f"{getattr(self, key)!r}")
        mlps = self.mlp if isinstance(self.mlp, tuple) else (self.mlp,)
        for m in self.mixers + mlps:
            if not hasattr(m, "build"):
                raise ValueError(f"{type(m).__name__} has no build(d_model, *, rngs, ...) method")
        if self.scan_blocks and (len(set(self.mixers)) != 1 or len(set(mlps)) != 1):
            raise ValueError("DecoderConfig.scan_blocks needs identical blocks: one mixer config "
                             "and one MLP config (hybrid patterns are unrolled)")

    def block_mixer(self, i: int):
        return self.mixers[i % len(self.mixers)]

    def block_mlp(self, i: int):
        return self.mlp[i % len(self.mlp)] if isinstance(self.mlp, tuple) else self.mlp


def parse_pattern(pattern: str, table: dict) -> tuple:
    """`"2 titans : 1 attention"` → (table["titans"],) * 2 + (table["attention"],)."""
    out = []
    for part in pattern.split(":"):
        m = re.fullmatch(r"\s*(?:(\d+)\s*[x×*]?\s*)?([A-Za-z_][\w-]*)\s*", part)
        if m is None or m.group(2) not in table:
            raise ValueError(f"bad pattern part {part!r} in {pattern!r}; names: {sorted(table)}")
        out += [table[m.group(2)]] * int(m.group(1) or 1)
    return tuple(out)


class BlockState(NamedTuple):
    mixer: Any
    mlp: Any


class Block(nnx.Module):
    """Pre-norm residual block: mixer slot then MLP slot (D11)."""

    def __init__(self, d_model: int, mixer_config, mlp_config, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32, eps: float = 1e-6):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm_mixer = RMSNorm(d_model, eps=eps, **kw)
        self.mixer = mixer_config.build(d_model, **kw)
        self.norm_mlp = RMSNorm(d_model, eps=eps, **kw)
        self.mlp = mlp_config.build(d_model, **kw)

    def init_state(self, batch_size: int, max_len: int) -> BlockState:
        return BlockState(self.mixer.init_state(batch_size, max_len),
                          self.mlp.init_state(batch_size, max_len))

    def __call__(self, h: Array, state: BlockState | None = None
                 ) -> tuple[Array, BlockState | None]:
        """h [B, T, d] → (h [B, T, d], state)."""
        y, s_mix = self.mixer(self.norm_mixer(h), None if state is None else state.mixer)
        h = constrain(h + y.astype(h.dtype))
        z, s_mlp = self.mlp(self.norm_mlp(h), None if state is None else state.mlp)
        h = constrain(h + z.astype(h.dtype))
        return h, None if state is None else BlockState(s_mix, s_mlp)


@nnx.remat
def _remat_block(block: Block, h: Array) -> Array:
    """A training-mode block whose activations are recomputed in the backward pass."""
    return block(h)[0]


@nnx.remat
def _remat_stateful_block(block: Block, h: Array, state: BlockState
                          ) -> tuple[Array, BlockState]:
    """A block reading a segment from a carried state, recomputed in the backward pass."""
    return block(h, state)


def _stack_logical_axes(blocks: nnx.Module) -> None:
    """Stacked parameters gain a leading block axis: mark it replicated (None) in logical_axes."""
    for _, var in nnx.iter_graph(blocks):
        if isinstance(var, nnx.Variable):
            names = var.get_metadata().get("logical_axes")
            if names is not None and len(names) == var[...].ndim - 1:
                var.set_metadata(logical_axes=(None,) + tuple(names))


def stack_blocks(blocks) -> nnx.State:
    """The state of unrolled blocks (a sequence of identical `Block`s) stacked on a leading axis:
    `nnx.update(scanned_model.blocks, stack_blocks(unrolled_model.blocks))` converts weights."""
    states = [nnx.state(b) for b in blocks]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


class DecoderCache(NamedTuple):
    """One state per block (a tuple; with scan_blocks one BlockState with stacked leaves)."""

    blocks: Any


class Decoder(nnx.Module):
    """Decoder LM; `model(tokens [B, T]) -> logits [B, T, V]` (float32)."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        dtype, pdtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        d = config.d_model
        self.config = config
        self.dtype = dtype
        emb_std = d ** -0.5 if config.tie_embeddings else 1.0
        self.embed = param(rngs, normal(emb_std), (config.vocab_size, d), ("vocab", "embed"),
                           pdtype)
        def make(i: int, block_rngs: nnx.Rngs) -> Block:
            return Block(d, config.block_mixer(i), config.block_mlp(i), rngs=block_rngs,
                         dtype=dtype, param_dtype=pdtype, eps=config.norm_eps)

        if config.scan_blocks:  # one Block whose parameters carry a leading [num_blocks] axis
            make_one = lambda block_rngs: make(0, block_rngs)
            self.blocks = nnx.split_rngs(splits=config.num_blocks)(
                nnx.vmap(make_one, in_axes=(0,), out_axes=0))(rngs)
            _stack_logical_axes(self.blocks)
        else:
            self.blocks = nnx.List([make(i, rngs) for i in range(config.num_blocks)])
        self.norm = RMSNorm(d, eps=config.norm_eps, rngs=rngs, dtype=dtype, param_dtype=pdtype)
        self.lm_head = (None if config.tie_embeddings else
                        Dense(d, config.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dtype,
                              param_dtype=pdtype))

    def init_state(self, batch_size: int, max_len: int | None = None) -> DecoderCache:
        """Fresh per-block states; attention caches hold `max_len` tokens (default
        config.max_len)."""
        max_len = self.config.max_len if max_len is None else max_len
        if self.config.scan_blocks:  # per-block states stacked on a leading axis
            init = nnx.vmap(lambda b: b.init_state(batch_size, max_len), in_axes=0, out_axes=0)
            return DecoderCache(init(self.blocks))
        return DecoderCache(tuple(b.init_state(batch_size, max_len) for b in self.blocks))

    def hidden(self, tokens: Array) -> Array:
        """tokens [B, T] int → the last block's output [B, T, d] (training: fresh states): what
        `head` turns into logits. With `head`, a loss can be taken a few positions at a time
        (`hope_jax.train.step.chunked_token_nll`)."""
        return self.forward_hidden(tokens, None)[0]

    def head(self, h: Array) -> Array:
        """The output head: final hidden states [..., d] → logits [..., V] float32 (final norm,
        then the unembedding)."""
        h = self.norm(h)
        if self.lm_head is None:
            return jnp.dot(h, self.embed[...].astype(h.dtype).T, preferred_element_type=jnp.float32)
        return self.lm_head(h).astype(jnp.float32)

    def forward(self, tokens: Array, cache: DecoderCache | None = None
                ) -> tuple[Array, DecoderCache | None]:
        """tokens [B, T] int → (logits [B, T, V] float32, cache). cache None = training."""
        h, cache = self.forward_hidden(tokens, cache)
        return self.head(h), cache

    def forward_hidden(self, tokens: Array, cache: DecoderCache | None
                       ) -> tuple[Array, DecoderCache | None]:
        """`forward` without the output head: tokens [B, T] → (the last block's output
        [B, T, d], cache). cache None = training (fresh states, remat as configured)."""
        if cache is None and self.config.remat == "full":
            segment = self.remat_segment(tokens.shape[1])
            if segment < tokens.shape[1]:
                return self._segments_hidden(tokens, segment), None
        h = constrain(jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype))
        return self._blocks_hidden(h, cache, remat=cache is None and self.config.remat != "none")

    def _blocks_hidden(self, h: Array, cache: DecoderCache | None, remat: bool
                       ) -> tuple[Array, DecoderCache | None]:
        """The blocks over h [B, T, d] (`remat`: each block recomputed in the backward)."""
        if self.config.scan_blocks:
            return self._scan_blocks(h, cache, remat)
        states = []
        for i, block in enumerate(self.blocks):
            if cache is None and remat:
                h, s = _remat_block(block, h), None
            elif remat:
                h, s = _remat_stateful_block(block, h, cache.blocks[i])
            else:
                h, s = block(h, None if cache is None else cache.blocks[i])
            states.append(s)
        return h, None if cache is None else DecoderCache(tuple(states))

    def _layers_lcm(self, name: str) -> int:
        """The lcm of every layer's `name` alignment (a layer without one gives its
        `state_alignment`); 0 when some layer's is 0."""
        aligns = [getattr(m, name, m.state_alignment) for _, m in nnx.iter_modules(self)
                  if hasattr(m, "state_alignment") and m is not self]
        return 0 if 0 in aligns else math.lcm(1, *aligns)

    def state_alignment(self) -> int:
        """The lcm of the chunks (and nested-reset periods) of every memory level: a state at a
        multiple of it is in the form of a fresh sequence's, so a sequence may be cut there
        (`hope_jax.sharding.sequence_scan`). 0 when some layer's state cannot be cut."""
        return self._layers_lcm("state_alignment")

    def document_alignment(self) -> int:
        """As `state_alignment`, for a state whose context restarts because a new, unrelated text
        begins (`reset_context`: carried-memory training, the memorisation probe): such a text
        starts at position 0, so a layer whose segments must otherwise run on (Titans MAC) may
        restart them there (its `document_alignment`). 0 when some state cannot."""
        return self._layers_lcm("document_alignment")

    def starts_document_at(self, length: int) -> bool:
        """The state after `length` tokens from a fresh start, its context restarted, begins a new
        text in fresh form (`fresh_form_like`): `length` is a multiple of `document_alignment`."""
        align = self.document_alignment()
        return bool(align) and length % align == 0

    def cuts_at(self, length: int) -> bool:
        """The state after `length` tokens from a fresh start continues in fresh form
        (`hope_jax.core.fresh_form`): `length` is whole chunks of every memory level."""
        align = self.state_alignment()
        return bool(align) and length % align == 0

    def remat_segment(self, length: int) -> int:
        """The segment of remat "full" for a training length (`DecoderConfig.remat_segment`)."""
        align = self.state_alignment()
        requested = self.config.remat_segment
        if requested and not align:
            raise ValueError("model.remat_segment: this model's state cannot be cut into "
                             "segments; use model.remat = block")
        if not align:
            return length
        if requested:
            if length % requested or requested % align:
                raise ValueError(f"model.remat_segment = {requested} must divide the length "
                                 f"{length} and be a multiple of {align}, the lcm of the "
                                 f"memory levels' chunks")
            return requested
        for parts in (4, 2):
            if length % parts == 0 and self.cuts_at(length // parts):
                return length // parts
        return length

    def _segments_hidden(self, tokens: Array, segment: int) -> Array:
        """remat "full": the blocks over tokens [B, T] a segment at a time, the recurrent state
        carried from segment to segment and each segment recomputed in the backward pass.
        Memory states keep the fresh form at the boundaries (positions None, as at the start:
        the boundaries are whole chunks), so each segment runs the levels' fresh-sequence path;
        attention caches and streaming states keep their positions.

        (Running the first segment apart, so that the fresh start is not stored, was measured
        and left out: XLA schedules that segment's recomputation early, and the compiled
        temporaries of tiny Hope grew from 25 to 43 MiB.)"""
        b, t = tokens.shape
        start = self.init_state(b, t)

        @nnx.remat
        def one_segment(model: Decoder, cache: DecoderCache, x: Array):
            h = constrain(jnp.take(model.embed[...], x, axis=0).astype(model.dtype))
            h, cache = model._blocks_hidden(h, expand(cache), remat=True)
            return compact(fresh_form_like(cache, start)), h  # stored compact at the cuts

        xs = jnp.moveaxis(tokens.reshape(b, t // segment, segment), 1, 0)
        _, hs = nnx.scan(one_segment, in_axes=(None, nnx.Carry, 0),
                         out_axes=(nnx.Carry, 0))(self, compact(start), xs)
        return jnp.moveaxis(hs, 0, 1).reshape(b, t, -1)

    def _scan_blocks(self, h: Array, cache: DecoderCache | None, remat: bool
                     ) -> tuple[Array, DecoderCache | None]:
        """The stacked blocks run by `nnx.scan` (h carried, per-block states scanned): (the last
        block's output, cache); `remat`: each block recomputed in the backward, as unrolled."""
        if cache is None:
            def train_body(block: Block, x: Array) -> Array:
                return _remat_block(block, x) if remat else block(x)[0]

            h = nnx.scan(train_body, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(self.blocks, h)
            return h, None

        def body(block: Block, x: Array, state: BlockState):
            return _remat_stateful_block(block, x, state) if remat else block(x, state)

        h, states = nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0))(
            self.blocks, h, cache.blocks)
        return h, DecoderCache(states)

    def __call__(self, tokens: Array) -> Array:
        """tokens [B, T] → logits [B, T, V] (float32)."""
        return self.forward(tokens)[0]

    def prefill(self, tokens: Array, max_len: int | None = None) -> tuple[Array, DecoderCache]:
        """Runs the prompt tokens [B, T] from fresh states → (logits [B, T, V], cache)."""
        return self.forward(tokens, self.init_state(tokens.shape[0], max_len))

    def step(self, token: Array, cache: DecoderCache) -> tuple[Array, DecoderCache]:
        """One decoding step: token [B] → (logits [B, V], cache)."""
        logits, cache = self.forward(token[:, None], cache)
        return logits[:, 0], cache
