"""Training-step memory and time vs the memory scans' checkpoint group G (JSON out).

    python experiments/bench/bench_scan_group.py                       # tiny and small Hope
    python experiments/bench/bench_scan_group.py --models hope:tiny:256:4 --groups 1,8

For each model (arch:size:T:batch) and each G of `model.scan_group` (core/grouped_scan.py: the
backward stores one memory state per G chunks and recomputes the rest), the full training step
(forward, backward, AdamW) is compiled once and reports XLA's compiled memory analysis; with
--steps > 0 it also runs and reports the median step time, whose ratio to G = 1 (same run) is
the recompute cost. Writes experiments/bench/results/scan_group.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_models import build_step, memory_bytes  # noqa: E402
from results_json import write_results  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def model_config(arch: str, size: str, seq_len: int, group: int):
    from hope_jax.config.build import decoder_config
    from hope_jax.config.experiments import experiment_config
    c = experiment_config(arch, size)
    c.data.seq_len, c.model.scan_group = seq_len, group
    return decoder_config(c, 260)


def run_one(arch: str, size: str, seq_len: int, batch: int, group: int, steps: int) -> dict:
    step, params, opt = build_step(model_config(arch, size, seq_len, group))
    tokens = np.random.default_rng(0).integers(0, 256, (batch, seq_len + 1)).astype(np.int32)
    t0 = time.perf_counter()
    compiled = step.lower(params, opt, tokens).compile()
    row = dict(arch=arch, size=size, seq_len=seq_len, batch=batch, scan_group=group,
               compile_s=time.perf_counter() - t0, memory=memory_bytes(compiled))
    if steps > 0:
        params, opt, loss = compiled(params, opt, tokens)  # warm-up
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            params, opt, loss = compiled(params, opt, tokens)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t)
        row.update(step_s=float(np.median(times)), loss=float(loss))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="hope:tiny:256:4,hope:small:512:16")
    ap.add_argument("--groups", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (tiny models only)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "scan_group.json"))
    a = ap.parse_args()
    rows = []
    for spec in a.models.split(","):
        arch, size, seq_len, batch = spec.split(":")
        for g in (int(x) for x in a.groups.split(",")):
            steps = a.steps if size == "tiny" else 0
            row = run_one(arch, size, int(seq_len), int(batch), g, steps)
            base = next((r for r in rows if r["arch"] == arch and r["size"] == size
                         and r["scan_group"] == 1), None)
            if base and "step_s" in row and "step_s" in base:
                row["time_vs_g1"] = row["step_s"] / base["step_s"]
            if base and base["memory"].get("peak"):
                row["peak_vs_g1"] = row["memory"]["peak"] / base["memory"]["peak"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_results(a.out, a, rows)


if __name__ == "__main__":
    main()
