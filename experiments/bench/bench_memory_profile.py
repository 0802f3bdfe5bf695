"""Memory profile of one training step: what holds the activation memory (JSON out).

    python experiments/bench/bench_memory_profile.py --arch hope --size small --batch 16 --seq 512
    python experiments/bench/bench_memory_profile.py --arch hope --size tiny --seq 64 --batch 4

Two views of the same step (forward, backward, AdamW; experiments/bench/bench_models.py):

* `residuals`: every array the forward keeps for the backward (`saved_residuals` of the loss),
  grouped by the code that produces it, e.g. "scan carries (core/grouped_scan.py)" are the memory
  states a chunked scan saves at its checkpoints. Exact bytes, known from tracing alone.
* `xla`: XLA's compiled memory analysis (temp, arguments, outputs, aliased), the peak the step
  really needs, including the backward's own temporaries. `--no_compile` skips it.

Writes experiments/bench/results/<--out>.json and prints the table that docs/core.md quotes.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from results_json import write_results  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def holder(source: str) -> str:
    """A readable owner for a residual from jax's source description."""
    if source.startswith("from the argument"):
        return "parameters (arguments of the loss)"
    if "literal" in source:
        return "constants"
    m = re.search(r"output of (\w+) from .*?hope_jax/([\w/]+\.py):\d+:\d+ \((\w+)\)", source)
    if m:
        prim, path, fn = m.groups()
        if prim == "scan":
            return f"scan outputs/carries: {path} ({fn})"
        return f"{path} ({fn})"
    m = re.search(r"from .*?/([\w]+/[\w]+\.py):\d+", source)
    return m.group(1) if m else source.split(" from ")[0]


def residual_profile(loss_fn, params, tokens) -> list[dict]:
    """Saved residuals grouped by holder, largest first: [{holder, bytes, arrays, largest}]."""
    from jax._src.ad_checkpoint import saved_residuals
    groups: dict = collections.defaultdict(lambda: dict(bytes=0, arrays=0, largest=""))
    for aval, source in saved_residuals(loss_fn, params, tokens):
        nbytes = int(np.prod(aval.shape)) * aval.dtype.itemsize
        g = groups[holder(source)]
        if nbytes > g.get("_max", -1):
            g["_max"], g["largest"] = nbytes, aval.str_short()
        g["bytes"] += nbytes
        g["arrays"] += 1
    rows = [dict(holder=h, bytes=g["bytes"], arrays=g["arrays"], largest=g["largest"])
            for h, g in groups.items()]
    return sorted(rows, key=lambda r: -r["bytes"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="hope")
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=0, help="0: the size preset's vocabulary")
    ap.add_argument("--scan_group", type=int, default=-1,
                    help="-1: the experiment preset's; else override (0 = the layer default)")
    ap.add_argument("--remat", default="", help="model.remat override (none | block | ...)")
    ap.add_argument("--no_compile", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import jax.numpy as jnp
    from bench_models import build_loss, build_step, memory_bytes
    from hope_jax.config.build import decoder_config
    from hope_jax.config.experiments import experiment_config
    from hope_jax.models.presets import SIZES

    c = experiment_config(args.arch, args.size)
    c.data.seq_len = args.seq
    if args.scan_group >= 0:
        c.model.scan_group = args.scan_group
    if args.remat:
        c.model.remat = args.remat
    vocab = args.vocab or SIZES[args.size].vocab_size
    cfg = dataclasses.replace(decoder_config(c, vocab), vocab_size=vocab)

    loss_fn, flat = build_loss(cfg)

    tokens = jnp.zeros((args.batch, args.seq + 1), jnp.int32)
    rows = residual_profile(loss_fn, flat, tokens)
    total = sum(r["bytes"] for r in rows)
    n_params = sum(int(np.prod(x.shape)) for x in flat.values())
    print(f"{args.arch} {args.size}, B {args.batch} × T {args.seq}, scan_group "
          f"{c.model.scan_group}, remat {c.model.remat}: {n_params / 1e6:.2f}M parameters, "
          f"saved residuals {total / 2**30:.3f} GiB")
    for r in rows[:12]:
        print(f"  {r['bytes'] / 2**20:10.1f} MiB  {100 * r['bytes'] / total:5.1f} %  "
              f"{r['arrays']:5d} arrays  {r['holder']}  (largest {r['largest']})")
    result = dict(arch=args.arch, size=args.size, batch=args.batch, seq=args.seq,
                  scan_group=c.model.scan_group, remat=c.model.remat, params=n_params,
                  residual_bytes=total, residuals=rows)
    if not args.no_compile:
        step, p, o = build_step(cfg)
        compiled = step.lower(p, o, tokens).compile()
        result["xla"] = memory_bytes(compiled)
        print("  XLA compiled memory analysis:",
              {k: f"{v / 2**30:.3f} GiB" for k, v in result["xla"].items()})
    out = args.out or f"memory_profile_{args.arch}_{args.size}_b{args.batch}_t{args.seq}"
    write_results(os.path.join(RESULTS, f"{out}.json"), args, [result])


if __name__ == "__main__":
    main()
