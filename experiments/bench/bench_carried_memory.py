"""What carried-memory training costs: the trainer's step with `train.carried_memory` 0 vs f.

    python experiments/bench/bench_carried_memory.py [--archs titans_lmm,hope] [--fraction 0.5]

For each architecture at the tiny recipe (B 4 × T 256, one device), the real train step
(`build_trainer`, compiled ahead) with the carried-memory prefix pass and without it, timed in
alternating rounds so that both see the same machine load; reports the median step times, their
ratio (same run) and XLA's compiled temporaries. Writes
experiments/bench/results/carried_memory.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from results_json import write_results  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def compiled_step(arch: str, fraction: float, tokens: np.ndarray):
    from hope_jax.config.experiments import experiment_config
    from hope_jax.train.build import build_trainer
    from hope_jax.train.host_memory import compile_ahead
    from hope_jax.train.mesh import build_mesh
    c = experiment_config(arch, "tiny")
    c.train.global_batch, c.data.seq_len = tokens.shape[0], tokens.shape[1] - 1
    c.train.carried_memory = fraction
    tr = build_trainer(c, 260, build_mesh({"data": 1}, jax.devices()[:1]), pad_id=256)
    state = tr.init_state()
    tok = jax.device_put(tokens, tr.batch_sharding)
    step = compile_ahead(tr.train_step, state, tok, jnp.array(False))
    temp = step.memory_analysis().temp_size_in_bytes
    return step, state, tok, temp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="titans_lmm,hope")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="steps per round")
    ap.add_argument("--out", default=os.path.join(RESULTS, "carried_memory.json"))
    a = ap.parse_args()
    tokens = np.random.default_rng(0).integers(0, 256, (4, 257)).astype(np.int32)
    rows = []
    for arch in a.archs.split(","):
        runs = {f: list(compiled_step(arch, f, tokens)) for f in (0.0, a.fraction)}
        times = {f: [] for f in runs}
        for _ in range(a.rounds):
            for f, run in runs.items():
                step, state, tok, _ = run
                state, m = step(state, tok, jnp.array(False))          # warm
                jax.block_until_ready(m["loss"])
                t = time.perf_counter()
                for _ in range(a.steps):
                    state, m = step(state, tok, jnp.array(False))
                jax.block_until_ready(m["loss"])
                times[f].append((time.perf_counter() - t) / a.steps)
                run[1] = state
        base, carried = (float(np.median(times[f])) for f in (0.0, a.fraction))
        row = dict(arch=arch, fraction=a.fraction, step_s=base, carried_step_s=carried,
                   ratio=carried / base, temp_bytes=runs[0.0][3],
                   carried_temp_bytes=runs[a.fraction][3])
        print(f"{arch}: {base * 1e3:.1f} ms/step reset only, {carried * 1e3:.1f} ms/step with "
              f"carried_memory={a.fraction} ({row['ratio']:.2f}×); temporaries "
              f"{row['temp_bytes'] / 2**20:.1f} → {row['carried_temp_bytes'] / 2**20:.1f} MiB")
        rows.append(row)
    write_results(a.out, a, rows)


if __name__ == "__main__":
    main()
