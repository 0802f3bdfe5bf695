"""The shapes both sides of bench_peers.py run (plain Python: imported by the jax and the torch
workers alike).

A "model" case trains a whole language model (forward, backward, optimizer step) on random token
batches of [batch, seq]; a "layer" case runs one Titans memory layer forward and backward on a
random [batch, seq, dim] input (sum of the output as the loss). `peer` names the PyTorch
implementation run against hope_jax (None: no public peer; hope_jax runs alone).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

TINY = dict(layers=2, dim=64, heads=4, seq=64, vocab=260)
SMALL = dict(layers=6, dim=256, heads=4, seq=512, vocab=8192)
LAYER = dict(dim=256, heads=4, head_dim=64, chunk=64, batch=2)

CASES: dict[str, dict] = {
    "hope_tiny": dict(kind="model", arch="hope", size="tiny", peer="nested_learning_hope_selfmod",
                      batch=4, **TINY),
    "hope_small_b2": dict(kind="model", arch="hope", size="small",
                          peer="nested_learning_hope_selfmod", batch=2, **SMALL),
    "hope_small_b16": dict(kind="model", arch="hope", size="small",
                           peer="nested_learning_hope_selfmod", batch=16, **SMALL),
    "titans_mac_small_b16": dict(kind="model", arch="titans_mac", size="small",
                                 peer="titans_pytorch_mac", batch=16, **SMALL),
    "titans_mag_small_b16": dict(kind="model", arch="titans_mag", size="small", peer=None,
                                 batch=16, **SMALL),
    "transformer_small_b16": dict(kind="model", arch="transformer", size="small",
                                  peer="nested_learning_transformer", batch=16, **SMALL),
    "titans_layer_1k": dict(kind="layer", peer="titans_pytorch_neural_memory", seq=1024, **LAYER),
    "titans_layer_4k": dict(kind="layer", peer="titans_pytorch_neural_memory", seq=4096, **LAYER),
    "titans_layer_16k": dict(kind="layer", peer="titans_pytorch_neural_memory", seq=16384,
                             **LAYER),
}

# What `make bench-peers` runs by default: every case but hope_small_b16, whose PyTorch side would
# take an estimated 18 minutes per step on a 2-core CPU (8× the measured 136 s batch-2 step; ask
# for it by name).
DEFAULT_CASES = ("hope_tiny", "hope_small_b2", "titans_mac_small_b16", "titans_mag_small_b16",
                 "transformer_small_b16", "titans_layer_1k", "titans_layer_4k",
                 "titans_layer_16k")


def median_step_s(run: Callable[[], None], steps: int) -> float:
    """One warm-up call of `run` (which must finish its work before returning), then the median
    wall time of `steps` calls: both workers time their side this way."""
    run()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
