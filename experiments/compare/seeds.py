"""One comparison trained from several seeds (`run.py --seed N`), summarised across the seeds.

    python experiments/compare/seeds.py --comparison=tiny2k --seeds=0,1,2

Reads `<reports>/<comparison>/results.json` for seed 0 and `<reports>/<comparison>_seed<N>/`
for the others, and writes `<reports>/<comparison>_seeds/{report.md, results.json}`.

A comparison's report pairs two models over the same held-out windows, so its standard error
covers the choice of text only. Two trainings of one model from different seeds can differ by
more than that. This summary takes, per model and seed, the held-out bpb and its difference to
the first model (paired over the windows, as in the report), then the mean over the seeds and
its standard error over the seeds (sample deviation / √n), which covers the seed as well.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _run_module():
    spec = importlib.util.spec_from_file_location("hope_experiments_compare_run",
                                                  os.path.join(HERE, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def report_dir(reports: str, comparison: str, seed: int) -> str:
    return os.path.join(reports, comparison if seed == 0 else f"{comparison}_seed{seed}")


def mean_and_se(values: list[float]) -> tuple[float, float | None]:
    """The mean and its standard error over the values (None with fewer than two)."""
    x = np.asarray(values, np.float64)
    if len(x) < 2:
        return float(x.mean()), None
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def summarize(per_seed: dict[int, dict], paired_difference) -> dict:
    """{model: {bpb: {seed: v}, minus_ref: {seed: (d, se)}, bpb_mean, bpb_se, minus_ref_mean,
    minus_ref_se, write_ablation_4x: {seed: v}, memorization_gain: {seed: v}}} from the
    seeds' results.json; the reference is the comparison's first model."""
    first = next(iter(per_seed.values()))
    names = [m["name"] for m in first["comparison"]["models"]]
    ref = names[0]
    out = {}
    for name in names:
        row = dict(bpb={}, minus_ref={}, write_ablation_4x={}, memorization_gain={})
        for seed, results in per_seed.items():
            stages = results["models"].get(name) or {}
            bpb = stages.get("bpb") or {}
            if "bpb" not in bpb:
                continue
            row["bpb"][seed] = float(bpb["bpb"])
            if "write_ablation_4x" in bpb:
                row["write_ablation_4x"][seed] = float(bpb["write_ablation_4x"])
            if "gain" in (stages.get("memorization") or {}):
                row["memorization_gain"][seed] = float(stages["memorization"]["gain"])
            if name != ref:
                d = paired_difference(bpb, (results["models"].get(ref) or {}).get("bpb"))
                if d is not None:
                    row["minus_ref"][seed] = d
        if row["bpb"]:
            row["bpb_mean"], row["bpb_se"] = mean_and_se(list(row["bpb"].values()))
        if row["minus_ref"]:
            row["minus_ref_mean"], row["minus_ref_se"] = mean_and_se(
                [d for d, _ in row["minus_ref"].values()])
        out[name] = row
    return dict(reference=ref, seeds=sorted(per_seed), models=out)


def _fmt(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def report_lines(comparison: str, summary: dict) -> list[str]:
    seeds, ref = summary["seeds"], summary["reference"]
    lines = [f"# `{comparison}` across training seeds {', '.join(map(str, seeds))}", "",
             "Held-out bpb per seed; the difference to "
             f"{ref} per seed with its standard error paired over the held-out windows; the mean "
             "over the seeds with its standard error over the seeds (sample deviation / √n). "
             "Write ablation: bpb with every in-context write off − on at 4× T. Memorisation "
             "gain: bpb with the memory reset per document − carried.", "",
             "| model | held-out bpb per seed | mean (SE) | − " + ref + "'s per seed (paired SE) "
             "| mean − " + ref + "'s (SE over seeds) | write ablation 4× T per seed "
             "| memorisation gain per seed |",
             "|---|---|---|---|---|---|---|"]
    for name, row in summary["models"].items():
        per = lambda key, signed=False, digits=3: " / ".join(
            _fmt(row[key].get(s), digits, signed) for s in seeds)
        diffs = " / ".join("—" if s not in row["minus_ref"] else
                           f"{row['minus_ref'][s][0]:+.3f} ({row['minus_ref'][s][1]:.3f})"
                           for s in seeds)
        mean = (f"{_fmt(row.get('bpb_mean'))} ({_fmt(row.get('bpb_se'))})"
                if row["bpb"] else "—")
        mdiff = (f"{_fmt(row['minus_ref_mean'], sign=True)} ({_fmt(row['minus_ref_se'])})"
                 if row["minus_ref"] else "—")
        lines.append(f"| {name} | {per('bpb')} | {mean} | {diffs if name != ref else '—'} | "
                     f"{mdiff} | {per('write_ablation_4x', True)} | "
                     f"{per('memorization_gain', True, 4)} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comparison", default="tiny2k")
    ap.add_argument("--seeds", default="0,1,2", help="comma list; 0 is the comparison itself")
    ap.add_argument("--reports", default=os.path.join(REPO, "experiments", "reports"),
                    help="the folder holding the comparisons' reports")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    per_seed = {}
    for seed in seeds:
        path = os.path.join(report_dir(args.reports, args.comparison, seed), "results.json")
        if not os.path.exists(path):
            ap.error(f"no results for seed {seed}: {path} (run `experiments/compare/run.py "
                     f"--comparison={args.comparison} --seed={seed}` first)")
        with open(path) as f:
            per_seed[seed] = json.load(f)
    summary = summarize(per_seed, _run_module().paired_difference)
    out = os.path.join(args.reports, f"{args.comparison}_seeds")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    lines = report_lines(args.comparison, summary)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
