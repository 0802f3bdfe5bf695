"""The cost of the next-token CMS objective (NL Sec. 7.1) against D9's surrogate (JSON out).

    python experiments/bench/bench_next_token_cms.py                 # tiny Hope, T 256, batch 4
    python experiments/bench/bench_next_token_cms.py --seq_len 128 --steps 10

Builds the trainer's jitted step (`hope_jax.train.build.build_trainer`, the step `hope-jax train`
runs) for `model.cms_objective` = surrogate and = next_token on one random batch of bytes,
compiles both, then times them alternately (`--steps` rounds), so the ratio of median step
times is taken under the same machine load. Reports compile time, median step time, tokens/s
and XLA's compiled memory analysis. Writes experiments/bench/results/next_token_cms.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_models import memory_bytes  # noqa: E402
from results_json import write_results  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
OBJECTIVES = ("surrogate", "next_token")


def build(objective: str, args):
    import hope_jax.learn  # noqa: F401  (registers the next-token objective)
    from hope_jax.config.experiments import experiment_config
    from hope_jax.train.build import build_trainer
    from hope_jax.train.mesh import build_mesh
    c = experiment_config(args.arch, args.size)
    c.data.seq_len, c.train.global_batch = args.seq_len, args.batch
    c.model.cms_objective = objective
    mesh = build_mesh(c.mesh)
    tr = build_trainer(c, 260, mesh, pad_id=0)
    state = tr.init_state()
    tokens = np.random.default_rng(0).integers(1, 256, (args.batch, args.seq_len + 1))
    tokens = jax.device_put(tokens.astype(np.int32), tr.batch_sharding)
    poison = np.zeros((), bool)
    t0 = time.perf_counter()
    compiled = tr.train_step.lower(state, tokens, poison).compile()
    compile_s = time.perf_counter() - t0
    box = [state]

    def run() -> float:
        t = time.perf_counter()
        box[0], metrics = compiled(box[0], tokens, poison)
        jax.block_until_ready(metrics["loss"])
        return time.perf_counter() - t
    return compiled, compile_s, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="hope")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--seq_len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="next_token_cms")
    args = ap.parse_args()
    built = {o: build(o, args) for o in OBJECTIVES}
    times = {o: [] for o in OBJECTIVES}
    for o in OBJECTIVES:
        built[o][2]()  # warm-up
    for _ in range(args.steps):  # alternate: both see the same load
        for o in OBJECTIVES:
            times[o].append(built[o][2]())
    rows = []
    for o in OBJECTIVES:
        step = statistics.median(times[o])
        rows.append(dict(objective=o, compile_s=built[o][1], step_s=step,
                         tokens_per_s=args.batch * args.seq_len / step,
                         memory=memory_bytes(built[o][0])))
        print(f"{o}: compile {built[o][1]:.0f} s, step {step * 1e3:.0f} ms, "
              f"{rows[-1]['tokens_per_s']:,.0f} tokens/s, XLA peak "
              f"{rows[-1]['memory'].get('peak', 0) / 1e6:.0f} MB", flush=True)
    ratio = rows[1]["step_s"] / rows[0]["step_s"]
    rows.append(dict(next_token_over_surrogate_step_time=ratio))
    print(f"next_token / surrogate step time: {ratio:.2f}x")
    write_results(os.path.join(RESULTS, f"{args.out}.json"), args, rows)


if __name__ == "__main__":
    main()
