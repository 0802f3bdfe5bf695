"""A learned state is a checkpoint like any other: the trainer's orbax layout (`hope_jax.train`).

`<workdir>/checkpoints/<step>/params` holds every model parameter under the trainer's flat names,
so `load_for_inference` (generate, eval) and `train.init_from` read a learned run as they read a
trained one. The learner's own state (optimizer states, gradient sums, the recurrent state, the
position) travels in the `opt_state` item and the stream position in `data`, so `hope-jax learn`
resumes exactly. `step` is the number of tokens streamed per row.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hope_jax.learn.learner import Learner, LearnerState
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.state import TrainState, to_host


def _extra(state: LearnerState) -> dict:
    return dict(opt=state.opt, acc=state.acc, cache=state.cache, position=state.position)


def save_learned(workdir: str, state: LearnerState, *, config: Any, vocab_size: int,
                 stream: dict | None = None, keep: int = 2) -> int:
    """Saves `state` (synchronously) at step = tokens streamed per row; returns the step.
    Raises ValueError if the state holds non-finite values (nothing is saved)."""
    step = int(to_host(state.position))
    train_state = TrainState(step=jnp.asarray(step, jnp.int32), params=state.params,
                             opt_state=_extra(state), bad_steps=jnp.zeros((), jnp.int32))
    ckpt = Checkpointer(workdir, keep=keep, async_save=False)
    try:
        if step in ckpt.steps():
            return step
        if not ckpt.save(train_state, data_states=[stream or {}], config=config,
                         vocab_size=vocab_size):
            raise ValueError(f"not saving the learned state at token {step}: it holds "
                             "non-finite values (lower the learning rate)")
        ckpt.wait()
    finally:
        ckpt.close()
    return step


def _abstract(tree: Any) -> Any:
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype,
                                                       sharding=dev), tree)


def restore_learned(workdir: str, learner: Learner, batch_size: int, *, config: Any,
                    vocab_size: int) -> tuple[LearnerState, dict, int] | None:
    """The newest learned state of `workdir` (None if it holds no checkpoint), with the stream
    position saved beside it and the step. The model and groups must be the saved ones."""
    fresh = learner.init(batch_size)
    abstract = TrainState(step=_abstract(jnp.zeros((), jnp.int32)),
                          params=_abstract(fresh.params), opt_state=_abstract(_extra(fresh)),
                          bad_steps=_abstract(jnp.zeros((), jnp.int32)))
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        out = ckpt.restore(abstract, config, vocab_size)
    finally:
        ckpt.close()
    if out is None:
        return None
    state, data_states, step = out
    extra = state.opt_state
    learned = LearnerState(dict(state.params), extra["opt"], extra["acc"], extra["cache"],
                           extra["position"])
    return learned, (data_states[0] if data_states else {}), step


__all__ = ["restore_learned", "save_learned"]
