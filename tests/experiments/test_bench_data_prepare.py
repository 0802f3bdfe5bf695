"""experiments/bench/bench_data_prepare.py end to end on a tiny corpus: valid JSON, identical
shards for every worker count. (Memory and speed are measured by the benchmark, never here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_data_prepare_tiny(tmp_path):
    out = tmp_path / "data_prepare.json"
    subprocess.run([sys.executable, os.path.join(REPO, "experiments", "bench",
                                                 "bench_data_prepare.py"),
                    "--mb", "0.3", "--workers", "0,1", "--tokenizer", "byte",
                    "--source", "python_stdlib", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["identical_shards_across_worker_counts"]
    assert [r["workers"] for r in result["runs"]] == [0, 1]
    for r in result["runs"]:
        assert r["peak_rss_main_mb"] > 0 and r["seconds"] > 0 and r["tokens"]["valid"] > 0
