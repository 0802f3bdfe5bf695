"""Benchmark: a jax-profiler summary of one model's training step (JSON out; not a test).

    python experiments/bench/bench_profile.py --arch hope --size tiny --batch 4 --seq 64
    python experiments/bench/bench_profile.py --arch transformer --size tiny --batch 4 --seq 64

Traces `--steps` executions of the compiled step (the trainer's own, AdamW; built as in
bench_attention.py) with `jax.profiler`, reads the trace back (`jax.profiler.ProfileData`) and
reports, per step:

  wall_ms          the step's wall time while traced
  op_runs          how many XLA operations ran (the leaf events of XLA:CPU's thunk executor:
                   fusions, dots, copies, ...; loops, the executor and its thread-pool waits
                   are containers, not operations, and the "end:" markers and thread-pool
                   listener events are bookkeeping)
  op_ms            their summed duration (over both worker threads, so it can exceed wall_ms)
  mean_op_us       op_ms / op_runs: how much work one operation does
  by_kind          op time by kind of operation (dot, fusion, copy / transpose, other)
  top              the operations with the most time

A step made of many microsecond operations is bound by the cost of launching them, not by its
arithmetic: then fewer, larger operations speed it up, and more FLOPs per operation do not slow
it down. Writes experiments/bench/results/<--out>.json and prints the summary docs/core.md quotes.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from results_json import write_results  # noqa: E402

CONTAINERS = re.compile(r"^(ThunkExecutor::|SlinkyThreadPool::|ThreadpoolListener::|end: |"
                        r"while|conditional|call)")


def kind(name: str) -> str:
    """The kind of an XLA:CPU operation from its HLO name."""
    base = name.split(".")[0]
    if base in ("dot", "dot_general", "convolution") or "dot" in base:
        return "dot"
    if "fusion" in base:
        return "fusion"
    if base in ("copy", "transpose", "bitcast", "broadcast", "concatenate", "slice",
                "dynamic-slice", "dynamic-update-slice", "dynamic_slice",
                "dynamic_update_slice", "pad", "reshape"):
        return "copy / layout"
    return "other"


def op_totals(xplane: str, key=lambda name: name
              ) -> tuple[collections.Counter, collections.Counter]:
    """(runs, nanoseconds) of the XLA operations in a trace file (the CPU plane's XLA worker
    threads; containers and bookkeeping events skipped), summed by `key(operation name)`."""
    from jax._src.profiler import ProfileData
    plane = next(p for p in ProfileData.from_file(xplane).planes if p.name == "/host:CPU")
    runs: collections.Counter = collections.Counter()
    time_ns: collections.Counter = collections.Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_XLAEigen"):
            continue
        for ev in line.events:
            if CONTAINERS.match(ev.name):
                continue
            runs[key(ev.name)] += 1
            time_ns[key(ev.name)] += ev.duration_ns
    return runs, time_ns


def summarize(xplane: str, steps: int) -> dict:
    """Per-step op statistics from a trace file."""
    runs, time_ns = op_totals(xplane)
    op_ns, op_runs = sum(time_ns.values()), sum(runs.values())
    by_kind: collections.Counter = collections.Counter()
    for name, ns in time_ns.items():
        by_kind[kind(name)] += ns
    return dict(
        op_runs=op_runs / steps, op_ms=op_ns / steps / 1e6,
        mean_op_us=op_ns / max(op_runs, 1) / 1e3,
        by_kind={k: round(100 * v / max(op_ns, 1), 1) for k, v in by_kind.most_common()},
        top=[dict(op=n, ms_per_step=round(ns / steps / 1e6, 3), runs_per_step=runs[n] / steps,
                  kind=kind(n)) for n, ns in time_ns.most_common(12)])


def _table(lines: list[str], start: str) -> dict[int, str]:
    """One of the optimised HLO's tables (FileNames, FunctionNames, FileLocations, StackFrames):
    id → the rest of its line."""
    out, on = {}, False
    for line in lines:
        if line == start:
            on = True
            continue
        if on:
            m = re.match(r"^(\d+) (.*)$", line)
            if not m:
                break
            out[int(m.group(1))] = m.group(2)
    return out


def source_of_ops(hlo_text: str) -> dict[str, str]:
    """HLO instruction name → "file:function:line" of the hope_jax (or experiments) frame nearest
    to the operation, from the compiled module's stack-frame tables."""
    lines = hlo_text.splitlines()
    files = {k: v.strip('"') for k, v in _table(lines, "FileNames").items()}
    funcs = {k: v.strip('"') for k, v in _table(lines, "FunctionNames").items()}
    locs, frames = {}, {}
    for k, v in _table(lines, "FileLocations").items():
        f = dict(re.findall(r"(\w+)=(\d+)", v))
        locs[k] = (files.get(int(f["file_name_id"]), "?"),
                   funcs.get(int(f["function_name_id"]), "?"),
                   int(f["line"]))
    for k, v in _table(lines, "StackFrames").items():
        f = dict(re.findall(r"(\w+)=(\d+)", v))
        frames[k] = (int(f["file_location_id"]), int(f["parent_frame_id"]))

    def where(frame: int) -> str:
        seen = set()
        while frame in frames and frame not in seen:
            seen.add(frame)
            loc, parent = frames[frame]
            file, func, line = locs.get(loc, ("?", "?", 0))
            if "/hope_jax/" in file or "/experiments/" in file:
                return f"{file.split('/hope_jax/')[-1]}:{func}:{line}"
            frame = parent
        return "?"

    out = {}
    for m in re.finditer(r"%([\w.\-]+) = .*?stack_frame_id=(\d+)", hlo_text):
        out[m.group(1)] = where(int(m.group(2)))
    return out


def by_source(xplane: str, steps: int, names: dict[str, str], top: int = 25) -> list[dict]:
    """Operation runs and time per step, summed by the source line that produced them."""
    runs, time_ns = op_totals(xplane, key=lambda name: names.get(name, "?"))
    return [dict(source=s, runs_per_step=n / steps, ms_per_step=round(time_ns[s] / steps / 1e6, 3))
            for s, n in runs.most_common(top)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="hope")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="traced steps (after 3 untraced)")
    ap.add_argument("--out", default="")
    ap.add_argument("--by_source", action="store_true",
                    help="also sum the operations by the hope_jax source line that made them")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    from bench_attention import build_step

    jitted, state, tokens = build_step(args.arch, args.seq, "xla", 512, size=args.size)
    tokens = jnp.tile(tokens, (args.batch, 1))
    poison = jnp.zeros((), bool)
    step = jitted.lower(state, tokens, poison).compile()
    for _ in range(3):
        state, m = step(state, tokens, poison)
        jax.block_until_ready(m["loss"])
    trace_dir = tempfile.mkdtemp(prefix="hope_jax_profile_")
    try:
        jax.profiler.start_trace(trace_dir)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, m = step(state, tokens, poison)
            jax.block_until_ready(m["loss"])
        wall = (time.perf_counter() - t0) / args.steps
        jax.profiler.stop_trace()
        xplane = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
        row = dict(arch=args.arch, size=args.size, batch=args.batch, seq=args.seq,
                   wall_ms=round(wall * 1e3, 2),
                   tokens_per_s=round(args.batch * args.seq / wall, 1),
                   **summarize(xplane, args.steps))
        if args.by_source:
            row["by_source"] = by_source(xplane, args.steps, source_of_ops(step.as_text()))
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    print(f"{args.arch} {args.size}, B {args.batch} × T {args.seq}: {row['wall_ms']:.1f} ms per "
          f"step ({row['tokens_per_s']:,.0f} tokens/s while traced); {row['op_runs']:,.0f} XLA "
          f"operations per step, {row['op_ms']:.1f} ms of them, {row['mean_op_us']:.1f} µs each "
          f"on average")
    print("  time by kind:", ", ".join(f"{k} {v} %" for k, v in row["by_kind"].items()))
    for t in row["top"][:8]:
        print(f"  {t['ms_per_step']:8.3f} ms  {t['runs_per_step']:6.1f}×  {t['op']}")
    for t in row.get("by_source", []):
        print(f"  {t['runs_per_step']:8.0f} runs  {t['ms_per_step']:8.2f} ms  {t['source']}")
    out = args.out or f"profile_{args.arch}_{args.size}_b{args.batch}_t{args.seq}"
    write_results(os.path.join(HERE, "results", f"{out}.json"), args, [row])


if __name__ == "__main__":
    main()
