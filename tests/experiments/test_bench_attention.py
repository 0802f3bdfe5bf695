"""experiments/bench/bench_attention.py: one tiny child measurement end to end (speed is the
benchmark's business, never tested here)."""
from __future__ import annotations

import importlib.util
import math
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_attention_child_tiny():
    path = os.path.join(REPO, "experiments", "bench", "bench_attention.py")
    spec = importlib.util.spec_from_file_location("hope_bench_attention", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.child("transformer", 48, "xla", 16, 1)        # blockwise: 3 query blocks
    assert row["compiled_gib"] > 0 and row["peak_rss_gib"] > 0 and row["tokens_per_s"] > 0
    assert math.isfinite(row["loss"])
