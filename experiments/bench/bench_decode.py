"""Benchmark: decode time per token vs context length, Hope vs Titans (MAG) vs Transformer++
(tiny, parameter-matched as in experiments/compare/tiny.py; batch 1). Not a test.

Each model is built once (max_len = the longest context + N). For each context length L: a fresh
cache with L + N slots (`model.init_state(1, L + N)`; only
attention's KV buffer depends on it; Hope's memories and MAG's sliding-window ring buffer do
not), the context (random bytes) prefilled in pieces of `--prefill_chunk` tokens through the
jitted `model.forward(piece, cache)` (prefill time reported apart), then N single-token
`model.step` calls, each jitted (the first call compiles: reported apart; memory models compile
once, attention once per L), timed one by one with
`block_until_ready`; ms/token = median. Memory layers carry an O(1) state per token; the
Transformer++ step attends over its whole KV buffer (L + N slots), so its cost grows with L.

Usage:
    python experiments/bench/bench_decode.py                 # L = 1K … 32K
    python experiments/bench/bench_decode.py --quick         # L = 64, 256; N = 8 (tests)
Writes experiments/bench/results/decode.json (+ decode.png) and prints a table with each
model's ms/token at the longest context ÷ at the shortest (target for Hope: ≤ 1.3).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from bench_models import MODELS, decoder_config

DEFAULT_CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768)


@nnx.jit
def _forward(model, tokens, cache):
    return model.forward(tokens, cache)


@nnx.jit
def _step(model, token, cache):
    return model.step(token, cache)


def build(name: str, max_len: int, size: str):
    """The model, built once per name (max_len = the longest context + steps), so the memory
    models' step and prefill programs (whose shapes do not depend on L) compile once."""
    from hope_jax.models import Decoder
    return Decoder(decoder_config(name, max_len, size), rngs=nnx.Rngs(0))


def bench_one(name: str, model, L: int, n_steps: int, prefill_chunk: int) -> dict:
    rng = np.random.default_rng(0)
    ctx = jnp.asarray(rng.integers(0, 256, (1, L)), jnp.int32)
    cache = model.init_state(1, L + n_steps)
    chunk = min(prefill_chunk, L)
    if L % chunk:
        raise ValueError(f"context {L} is not a multiple of the prefill chunk {chunk}")
    t0 = time.perf_counter()
    logits = None
    for s in range(0, L, chunk):
        logits, cache = _forward(model, ctx[:, s:s + chunk], cache)
    jax.block_until_ready(logits)
    prefill_s = time.perf_counter() - t0   # includes compiling the forward once
    token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    t0 = time.perf_counter()
    logits, cache = _step(model, token, cache)          # compiles the step
    jax.block_until_ready(logits)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(n_steps - 1):
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        t0 = time.perf_counter()
        logits, cache = _step(model, token, cache)
        jax.block_until_ready(logits)
        times.append(time.perf_counter() - t0)
    ok = bool(np.isfinite(np.asarray(logits)).all())
    return dict(model=name, context=L, steps=n_steps, prefill_chunk=chunk,
                prefill_s=prefill_s, step_compile_s=compile_s,
                ms_per_token=1e3 * statistics.median(times),
                ms_p10=1e3 * float(np.percentile(times, 10)),
                ms_p90=1e3 * float(np.percentile(times, 90)), finite=ok)


def growth(rows: list[dict]) -> dict:
    """model → ms/token at the longest context ÷ at the shortest."""
    out = {}
    for m in dict.fromkeys(r["model"] for r in rows):
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["context"])
        if len(rs) >= 2:
            out[m] = rs[-1]["ms_per_token"] / rs[0]["ms_per_token"]
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in dict.fromkeys(r["model"] for r in rows):
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["context"])
        ax.errorbar([r["context"] for r in rs], [r["ms_per_token"] for r in rs],
                    yerr=[[r["ms_per_token"] - r["ms_p10"] for r in rs],
                          [r["ms_p90"] - r["ms_per_token"] for r in rs]], fmt="o-", label=m,
                    capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("decode ms / token (batch 1, median; p10–p90)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="decode ms/token vs context length")
    ap.add_argument("--contexts", default=",".join(map(str, DEFAULT_CONTEXTS)))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed per context")
    ap.add_argument("--prefill_chunk", type=int, default=1024)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--quick", action="store_true", help="contexts 64, 256; 8 steps (tests)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "decode.json"))
    ap.add_argument("--no_plot", action="store_true")
    args = ap.parse_args(argv)
    contexts = [64, 256] if args.quick else [int(x) for x in args.contexts.split(",")]
    n_steps = 8 if args.quick else args.steps
    chunk = 64 if args.quick else args.prefill_chunk
    models = args.models.split(",")
    rows = []
    t_start = time.perf_counter()
    print(f"{'model':12s} {'context':>7s} {'ms/token':>9s} {'p10':>7s} {'p90':>7s} "
          f"{'prefill s':>9s} {'compile s':>9s}", flush=True)
    for m in models:
        model = build(m, max(contexts) + n_steps, args.size)
        for L in contexts:
            r = bench_one(m, model, L, n_steps, chunk)
            rows.append(r)
            print(f"{m:12s} {L:7d} {r['ms_per_token']:9.3f} {r['ms_p10']:7.3f} {r['ms_p90']:7.3f} "
                  f"{r['prefill_s']:9.1f} {r['step_compile_s']:9.1f}"
                  + ("" if r["finite"] else "  (non-finite logits)"), flush=True)
    g = growth(rows)
    print(f"ms/token at {contexts[-1]} ÷ at {contexts[0]}: " +
          ", ".join(f"{m} {v:.2f}×" for m, v in g.items()))
    import subprocess
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    out = dict(git_commit=commit, command=" ".join(["python", os.path.relpath(__file__)]
                                                  + list(sys.argv[1:] if argv is None else argv)),
               benchmark="bench_decode", host=platform.node(), cpus=os.cpu_count(),
               platform=jax.devices()[0].platform, jax=jax.__version__, contexts=contexts,
               models=models, steps=n_steps, wall_s=time.perf_counter() - t_start, rows=rows,
               growth_longest_over_shortest=g)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    if not args.no_plot:
        plot(rows, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
