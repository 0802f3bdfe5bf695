"""Training with in-context CMS levels that learn from the next-token loss (NL Sec. 7.1).

The default in-context CMS level writes its fast weights by GD on a local surrogate,
½‖F(z) − W_tgt z‖² (D9). This module gives the training-time variant true to NL Sec. 7.1: the
level's inner objective is the model's own next-token loss over each chunk, and the outer
gradient flows through those updates (second order: the outer loss differentiates the inner
gradient).

For a training sequence of T tokens split into segments of C tokens (the level's chunk), with θ_j
the level's fast weights (one copy per sequence, starting at the learned θ_0):

    ℓ_j(θ_j) = mean_{t ∈ segment j} −log p(x_{t+1} | x_≤t; θ_j)        (scored before the write)
    θ_{j+1} = θ_j − lr · ∇_θ ℓ_j(θ_j)                                   (inner step, NL Eq. 71)
    L = mean_j ℓ_j(θ_j),   ∂L/∂(θ_0, every other parameter) through every θ_j

It reuses the deployment learner (`hope_jax.learn.Learner`: the same segment scan, O(S) memory
per segment, recurrent state carried), differentiated end to end. The level's surrogate write is
switched off (`layers.cms.without_surrogate_writes`, applied by the config): its only writes are
the next-token steps (its retention toward θ_0 still applies). Importing this module registers
the objective with the trainer (`model.cms_objective = "next_token"`). Cost and measured effect:
docs/continual.md, "Training-time next-token levels".
"""
from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from hope_jax.learn.groups import GroupSpec
from hope_jax.learn.learner import Learner
from hope_jax.train.build import NLL_OBJECTIVES

Array = jax.Array


def next_token_nll(model_of: Callable[[dict], nnx.Module], lr: float, seq_len: int
                   ) -> Callable[[dict, Array], Array]:
    """(params, tokens [B, T+1]) → per-token NLL [B, T] (nats) of the model `model_of(params)`
    with every in-context CMS level written by GD (step `lr`) on the next-token loss of its
    chunks; differentiable in params. T must be a multiple of the levels' chunk."""

    def nll(params: dict, tokens: Array) -> Array:
        learner = _learner(model_of(params), lr, seq_len)
        t = tokens.shape[1] - 1
        if t % learner.segment:
            raise ValueError(f"model.cms_objective='next_token': data.seq_len {t} is not a "
                             f"multiple of the in-context CMS chunk ({learner.segment} tokens)")
        return learner._learn(learner.init(tokens.shape[0], params), tokens)[1]

    return nll


def _learner(model: nnx.Module, lr: float, seq_len: int) -> Learner:
    """The learner over the in-context CMS levels only, each at its own chunk, plain GD."""
    levels = [i for i, lvl in enumerate(model.config.mlp.levels) if lvl.in_context]
    specs = [GroupSpec(select=(f"cms{i}",), optimizer="gd", lr=lr) for i in levels]
    # training differentiates through the mixers' writes (D8), in the inner steps as well
    return Learner(model, specs, seq_len=seq_len, context_len=None, memory_gradient="full")


def _trainer_objective(config, model_of: Callable[[dict], nnx.Module]):
    return next_token_nll(model_of, float(config.model.cms_next_token_lr),
                          int(config.data.seq_len))


NLL_OBJECTIVES["next_token"] = _trainer_objective

__all__ = ["next_token_nll"]
