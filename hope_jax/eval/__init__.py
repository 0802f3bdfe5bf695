"""Evaluation: bits per byte, NIAH, MQAR, continual learning, test-time memorisation,
zero-shot scoring and report helpers (docs/evaluation.md)."""
from hope_jax.eval.continual import (DEFAULT_PHASES, continual_learning, forgetting,
                                     run_continual)
from hope_jax.eval.decode import greedy_decode
from hope_jax.eval.memorization import memorization_bpb, reset_context
from hope_jax.eval.mqar import mqar_accuracy, mqar_batch, mqar_batches, train_mqar
from hope_jax.eval.niah import NiahExample, make_niah_example, niah_accuracy, niah_grid
from hope_jax.eval.perplexity import bits_per_byte
from hope_jax.eval.zero_shot import (evaluate_jsonl, lambada, load_jsonl, multiple_choice,
                                     score_continuations)

__all__ = ["DEFAULT_PHASES", "NiahExample", "bits_per_byte", "continual_learning",
           "evaluate_jsonl", "forgetting", "greedy_decode", "lambada", "load_jsonl",
           "make_niah_example", "memorization_bpb", "mqar_accuracy", "mqar_batch",
           "mqar_batches", "multiple_choice", "niah_accuracy", "niah_grid", "reset_context",
           "run_continual", "score_continuations", "train_mqar"]
