"""Builds a run's pieces on a mesh: model graph, sharded params, optimizer, jitted steps.

The model is never materialised unsharded: `nnx.eval_shape` gives the abstract model, the
rules table its shardings, and a jitted init with those `out_shardings` creates the params in
place on the mesh (so a model larger than one device's memory can be built).
"""
from __future__ import annotations

import functools

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from hope_jax.config.arch_defaults import carried_memory_fraction
from hope_jax.config.build import decoder_config
from hope_jax.layers.cms import update_periods
from hope_jax.models.decoder import Decoder, DecoderConfig
from hope_jax.optim.outer import make_optimizer
from hope_jax.train import mesh as mesh_lib
from hope_jax.train.carried_memory import carried_memory_nll
from hope_jax.train.state import ParamCodec, TrainState, all_finite
from hope_jax.train.step import (chunked_apply_nll, make_apply, make_eval_step,
                                 make_train_step)


# Training objectives other than the logits' next-token NLL, by `model.cms_objective`:
# name → factory(config, model_of) → nll_fn(params, tokens [B, T+1]) → NLL [B, T]. Higher layers
# register theirs (hope_jax.learn registers "next_token" when imported; the CLI imports it).
NLL_OBJECTIVES: dict[str, Callable] = {}


class Trainer(NamedTuple):
    """A run's static pieces. `train_step(state, tokens, poison)` and
    `eval_step(params, tokens, mask, token_bytes)` are jitted with the mesh shardings."""

    mesh: Mesh
    model_config: DecoderConfig
    graphdef: nnx.GraphDef
    rest: nnx.State
    codec: ParamCodec
    periods: dict[str, int]
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    state_shardings: TrainState
    batch_sharding: jax.sharding.NamedSharding
    abstract_state: TrainState
    init_state: Callable[[], TrainState]
    train_step: Callable
    eval_step: Callable
    state_finite: Callable
    apply: Callable


def _traced_on(mesh: Mesh, fn):
    """`fn` traced with `mesh` in context, so the model's activation constraints
    (`sharding.constrain`: batch over data × fsdp, length over `sequence`) take effect; without a
    mesh in context they are no-ops."""
    @functools.wraps(fn)
    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):   # (set_mesh: not inside jit)
            return fn(*args)
    return traced


def build_trainer(config, vocab_size: int, mesh: Mesh, *, pad_id: int) -> Trainer:
    """Everything `train()` needs except data and checkpoints (pure set-up, compiles lazily).

    `state_finite(state)` → bool[] (replicated): params and optimizer state all finite."""
    dcfg = decoder_config(config, vocab_size)
    seed = int(config.train.seed)
    make_model = lambda: Decoder(dcfg, rngs=nnx.Rngs(seed))
    abstract_model = nnx.eval_shape(make_model)
    graphdef, abs_params, _ = nnx.split(abstract_model, nnx.Param, ...)
    codec = ParamCodec(abs_params)
    periods = {k: int(v) for k, v in codec.to_flat(update_periods(abstract_model)).items()}
    p_shard = mesh_lib.flat_param_shardings(abs_params, codec, mesh)
    rep = mesh_lib.replicated(mesh)

    def init_params():
        _, params, rest = nnx.split(make_model(), nnx.Param, ...)
        return codec.to_flat(params), rest

    params_abs, _ = jax.eval_shape(init_params)
    init_params_jit = jax.jit(init_params, out_shardings=(p_shard, rep))

    tx, schedule = make_optimizer(config.optim, int(config.train.steps), periods)
    opt_abs = jax.eval_shape(tx.init, params_abs)
    o_shard = mesh_lib.opt_state_shardings(opt_abs, p_shard, params_abs, mesh)
    state_sh = TrainState(step=rep, params=p_shard, opt_state=o_shard, bad_steps=rep)
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        TrainState(jax.ShapeDtypeStruct((), jnp.int32), params_abs, opt_abs,
                   jax.ShapeDtypeStruct((), jnp.int32)), state_sh)

    # rest: non-trainable variables (none in the decoders here); built once, replicated
    rest = jax.jit(lambda: init_params()[1], out_shardings=rep)()

    def init_state(params: dict | None = None) -> TrainState:
        """Step 0 with a fresh optimizer; `params` (flat, on p_shard) replaces the random init
        (a warm start, `train.init_from`)."""
        if params is None:
            params, _ = init_params_jit()
        opt = jax.jit(tx.init, out_shardings=o_shard)(params)
        zero = lambda: jax.device_put(np.zeros((), np.int32), rep)  # two buffers
        return TrainState(step=zero(), params=params, opt_state=opt, bad_steps=zero())

    apply = make_apply(graphdef, rest, codec)
    model_of = lambda p: nnx.merge(graphdef, codec.to_state(p), rest)
    nll_fn = None
    loss_chunk = int(config.model.get("loss_chunk", 0))
    objective = config.model.cms_objective
    if objective != "surrogate":  # e.g. NL Sec. 7.1's next-token levels (docs/continual.md)
        if objective not in NLL_OBJECTIVES:
            raise ValueError(f"model.cms_objective={objective!r} is registered by "
                             "hope_jax.learn: import hope_jax.learn before building the trainer")
        nll_fn = NLL_OBJECTIVES[objective](config, model_of)
    elif loss_chunk > 0:  # the logits a chunk of positions at a time
        nll_fn = chunked_apply_nll(model_of, loss_chunk)
    train_nll = nll_fn
    carried = carried_memory_fraction(config)
    if carried > 0:  # some rows start from a carried memory
        train_nll = carried_memory_nll(model_of, carried, loss_chunk)
    step_fn = make_train_step(apply, tx, schedule, pad_id=pad_id,
                              grad_accum=int(config.optim.grad_accum), nll_fn=train_nll)
    b_shard = mesh_lib.batch_sharding(mesh)
    train_step = jax.jit(_traced_on(mesh, step_fn), in_shardings=(state_sh, b_shard, rep),
                         out_shardings=(state_sh, rep), donate_argnums=0)
    eval_step = jax.jit(_traced_on(mesh, make_eval_step(apply, nll_fn)),
                        in_shardings=(p_shard, b_shard, b_shard, rep), out_shardings=rep)
    state_finite = jax.jit(lambda st: all_finite((st.params, st.opt_state)),
                           in_shardings=(state_sh,), out_shardings=rep)
    return Trainer(mesh=mesh, model_config=dcfg, graphdef=graphdef, rest=rest, codec=codec,
                   periods=periods, tx=tx, schedule=schedule, state_shardings=state_sh,
                   batch_sharding=b_shard, abstract_state=abstract_state, init_state=init_state,
                   train_step=train_step, eval_step=eval_step,
                   state_finite=state_finite, apply=apply)


__all__ = ["NLL_OBJECTIVES", "Trainer", "build_trainer"]
