"""hope_jax.train: the trainer (docs/training.md).

`train(config, workdir)` runs a whole experiment; `load_for_inference(workdir)` restores the
latest checkpoint's model. The pieces: state / step (pure jitted steps, NaN policy), mesh
(shardings), checkpoint (orbax), distributed; the outer optimizer (AdamW … + multi-frequency) is
`hope_jax.optim.outer`.
"""
from hope_jax.optim.outer import decay_mask, lr_schedule, make_optimizer
from hope_jax.train.build import Trainer, build_trainer
from hope_jax.train.checkpoint import Checkpointer, IncompatibleCheckpointError
from hope_jax.train.distributed import maybe_initialize
from hope_jax.train.loop import NonFiniteTrainingError, load_for_inference, train
from hope_jax.train.mesh import build_mesh, validate_batch
from hope_jax.train.state import ParamCodec, TrainState
from hope_jax.train.step import make_eval_step, make_train_step, token_nll

__all__ = ["Checkpointer", "IncompatibleCheckpointError", "NonFiniteTrainingError", "ParamCodec",
           "TrainState", "Trainer", "build_mesh", "build_trainer", "decay_mask",
           "load_for_inference", "lr_schedule", "make_eval_step", "make_optimizer",
           "make_train_step", "maybe_initialize", "token_nll", "train",
           "validate_batch"]
