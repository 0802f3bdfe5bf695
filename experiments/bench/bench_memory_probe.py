"""The memory probe as a benchmark: trained runs in, JSON + PNG per run out.

    python experiments/bench/bench_memory_probe.py --workdir workdirs/hope-tiny [--workdir …]
        [--windows 16] [--multiples 1,4,16] [--mqar_steps 300] [--documents 8]

For each run: held-out bpb with every in-context write on vs off on seeded random windows of
1×, 4×, 16× its training length, bpb by position along them, the memorisation gain through
held-out documents and, with --mqar_steps > 0, MQAR accuracy of a fresh model of the same
architecture with writes on and off (`hope_jax.eval.memory_probe`; docs/evaluation.md).
Writes experiments/bench/results/memory_probe_<run>.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def probe_run(workdir: str, a: argparse.Namespace) -> dict:
    from hope_jax import data
    from hope_jax.config import decoder_config
    from hope_jax.eval.memory_probe import memory_probe
    from hope_jax.train import load_for_inference
    model, tok, config = load_for_inference(workdir)
    prepared = data.prepare(config.data, progress=False)
    stream = np.asarray(prepared.tokens("valid"))
    docs = prepared.documents("valid", a.documents)   # cache or prepared shards alike
    t0 = time.perf_counter()
    r = memory_probe(model, stream, np.asarray(tok.token_bytes()), int(config.data.seq_len),
                     documents=docs, model_config=decoder_config(config, 128),
                     mqar_steps=a.mqar_steps, windows=a.windows,
                     multiples=tuple(int(m) for m in a.multiples.split(",")), seed=a.seed,
                     progress=True)
    r.update(workdir=os.path.abspath(workdir), model=f"{config.model.arch}-{config.model.size}",
             seconds=time.perf_counter() - t0)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", action="append", required=True)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--multiples", default="1,4,16")
    ap.add_argument("--mqar_steps", type=int, default=0)
    ap.add_argument("--documents", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out_dir", default=RESULTS)
    a = ap.parse_args()
    from hope_jax.eval.memory_probe import plot_memory_probe, summary_lines
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    os.makedirs(a.out_dir, exist_ok=True)
    for wd in a.workdir:
        r = probe_run(wd, a)
        r.update(commit=commit, args=vars(a))
        name = os.path.basename(os.path.normpath(wd))
        path = os.path.join(a.out_dir, f"memory_probe_{name}")
        plot_memory_probe(r, path + ".png", title=f"memory probe: {r['model']} ({name})")
        with open(path + ".json", "w") as f:
            json.dump(r, f, indent=1, default=float)
        for line in summary_lines(r):
            print(f"{name}: {line}")
        print(f"wrote {path}.json / .png")


if __name__ == "__main__":
    main()
