"""hope_jax.learn: continual learning after deployment (NL Sec. 7.1), docs/continual.md."""
from hope_jax.learn.groups import (
    OPTIMIZERS,
    Group,
    GroupSpec,
    LearnConfigError,
    cms_levels,
    make_optimizer,
    parse_groups,
    resolve_groups,
)
from hope_jax.learn.learner import Learner, LearnerState
from hope_jax.learn.next_token_objective import next_token_nll

__all__ = ["Group", "GroupSpec", "LearnConfigError", "Learner", "LearnerState", "OPTIMIZERS",
           "cms_levels", "make_optimizer", "next_token_nll", "parse_groups", "resolve_groups"]
