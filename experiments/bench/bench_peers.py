"""hope_jax against its PyTorch peers, side by side in one run (JSON out). Not a test.

    make bench-peers                                   # installs .venv-peers, runs DEFAULT_CASES
    python experiments/bench/bench_peers.py --cases hope_tiny,titans_layer_1k --repeats 2

For each case of peers/cases.py (a whole model's training step, or one Titans memory layer's
forward and backward), hope_jax (peers/run_hope_jax.py, in this interpreter) and the peer
(peers/run_torch_peer.py, in --peers_python) run alternately, each in its own process, `--repeats`
times; a side's tokens/s is the median over its runs of the median step time inside each run,
and its peak RSS the largest resident set the OS reports for those processes (os.wait4's
ru_maxrss: measured, not estimated). hope_jax also reports XLA's compiled memory analysis.
The ratio column is hope_jax ÷ peer tokens/s. A peer that fails to import, crashes or runs past
--timeout is recorded with the reason, and the run goes on.
Writes experiments/bench/results/peers.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
from cases import CASES, DEFAULT_CASES  # noqa: E402
from results_json import write_results  # noqa: E402

RESULTS = os.path.join(HERE, "results")
REPO = os.path.dirname(os.path.dirname(HERE))


def run_side(python: str, script: str, case: str, steps: int, timeout: float) -> dict:
    """One worker process: its JSON line, wall time and peak RSS, or the reason it failed."""
    cmd = [python, os.path.join(HERE, "peers", script), "--case", case, "--steps", str(steps)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO)
        except OSError as e:
            return dict(error=f"could not start {python}: {e}")
        while True:  # reap with wait4 ourselves: its rusage is this child's alone
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                return dict(error=f"ran past --timeout {timeout:.0f} s")
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
        wall = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak_rss_gb = usage.ru_maxrss * 1024 / 1e9  # Linux reports KiB
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        why = ("killed by SIGKILL (the OOM killer, most likely)" if proc.returncode == -9
               else f"exit {proc.returncode}")
        return dict(error=f"{why}: " + " | ".join(tail), wall_s=wall, peak_rss_gb=peak_rss_gb)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return dict(error="no result line", wall_s=wall)
    return dict(json.loads(lines[-1]), wall_s=wall, peak_rss_gb=peak_rss_gb)


def summarise(runs: list[dict]) -> dict:
    """Median tokens/s and largest peak RSS over a side's successful runs (or its first error)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return dict(error=runs[0]["error"] if runs else "not run")
    best = dict(ok[0])
    best.update(tokens_per_s=statistics.median(r["tokens_per_s"] for r in ok),
                step_s=statistics.median(r["step_s"] for r in ok),
                peak_rss_gb=max(r["peak_rss_gb"] for r in ok), runs=len(ok))
    return best


def bench_case(name: str, args) -> dict:
    case = CASES[name]
    sides = {"hope_jax": []}
    if case["peer"] is not None:
        sides["peer"] = []
    for _ in range(args.repeats):  # alternate, so the machine's drift falls on both sides
        sides["hope_jax"].append(run_side(sys.executable, "run_hope_jax.py", name, args.steps,
                                          args.timeout))
        if "peer" in sides:
            sides["peer"].append(run_side(args.peers_python, "run_torch_peer.py", name,
                                          args.peer_steps, args.timeout))
    row = dict(case=name, peer_name=case["peer"], **{k: v for k, v in case.items() if k != "peer"})
    row.update({side: summarise(runs) for side, runs in sides.items()})
    mine, peer = row["hope_jax"], row.get("peer", {})
    if "tokens_per_s" in mine and "tokens_per_s" in peer:
        row["speed_ratio"] = mine["tokens_per_s"] / peer["tokens_per_s"]
        row["rss_ratio"] = mine["peak_rss_gb"] / peer["peak_rss_gb"]
    return row


def cell(side: dict) -> str:
    if "error" in side:
        return f"failed: {side['error'][:60]}"
    return f"{side['tokens_per_s']:,.0f} tok/s, {side['peak_rss_gb']:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help=f"comma list of {sorted(CASES)}")
    ap.add_argument("--repeats", type=int, default=2, help="processes per side, alternating")
    ap.add_argument("--steps", type=int, default=5, help="timed hope_jax steps per process")
    ap.add_argument("--peer_steps", type=int, default=2, help="timed peer steps per process")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    ap.add_argument("--peers_python", default=os.path.join(REPO, ".venv-peers", "bin", "python"))
    ap.add_argument("--out", default="peers")
    args = ap.parse_args()
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; expected some of {sorted(CASES)}")
    rows = []
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] {name} ...", flush=True)
        row = bench_case(name, args)
        rows.append(row)
        ratio = f"{row['speed_ratio']:.2f}x" if "speed_ratio" in row else "-"
        peer = (f"{row['peer_name']}: {cell(row['peer'])}" if row["peer_name"]
                else "no public peer")
        print(f"  hope_jax {cell(row['hope_jax'])} | {peer} | ratio {ratio}", flush=True)
        write_results(os.path.join(RESULTS, f"{args.out}.json"), args, rows)


if __name__ == "__main__":
    main()
