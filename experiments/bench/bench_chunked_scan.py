"""Benchmark: the chunked scan against the token-by-token recurrence (not a test).

Times forward and forward+backward of `hope_jax.core.chunked_scan` (closed-form / linear paths) and
of `reference_scan` (C = 1, autodiff per token) for batch 2, 4 heads, d_head 64, chunk 64 and
T ∈ {1024, 4096, 16384}, on three levels:

  mlp_momentum  residual MLP memory (expansion 4), L2 objective, GD + momentum + retention (Titans)
  mlp_dgd       residual MLP memory (expansion 4), L2 objective, DGD + momentum + retention (Hope)
  gdn           matrix memory, dot objective, gated DGD (Gated DeltaNet)

Compile time is reported apart from the steady state (best of --repeats). Also reports the achieved
GFLOP/s of forward+backward (XLA's flop count of one chunk times the number of chunks) against this
machine's measured float32 matmul peak, and the
compiled temporary memory of forward+backward (to show it is linear in T). Prints a table and
writes JSON (default experiments/bench/results/chunked_scan.json).

    python experiments/bench/bench_chunked_scan.py [--lengths 1024 4096 16384] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

from hope_jax import core

LEVELS = {
    "mlp_momentum": lambda c: core.Level(core.residual_mlp_memory(expansion=4), core.l2(),
                                         core.momentum_gd(), chunk_size=c),
    "mlp_dgd": lambda c: core.Level(core.residual_mlp_memory(expansion=4), core.l2(), core.dgd(),
                                    chunk_size=c),
    "gdn": lambda c: core.Level(core.matrix_memory(), core.dot_product(),
                                core.dgd(momentum=False, normalize=False, gated=True),
                                chunk_size=c),
}
# The reference's backward keeps one memory state per token: skip it where that exceeds RAM.
REFERENCE_FB_MAX_TOKENS = {"mlp_momentum": 4096, "mlp_dgd": 4096, "gdn": 16384}


def inputs(b: int, t: int, h: int, d: int, seed: int = 0) -> dict:
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    return dict(
        q=unit(jax.random.normal(ks[0], (b, t, h, d))),
        k=unit(jax.random.normal(ks[1], (b, t, h, d))),
        v=jax.random.normal(ks[2], (b, t, h, d)),
        eta=jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h)) - 2.0),
        alpha=jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h)) + 5.0),
        beta=jax.nn.sigmoid(jax.random.normal(ks[5], (b, t, h)) + 2.0),
    )


def timed(fn, args, repeats: int) -> dict:
    """Compile time, best steady-state time, XLA flops and temporary bytes of `jit(fn)(*args)`."""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    mem = compiled.memory_analysis()
    temp = int(getattr(mem, "temp_size_in_bytes", 0)) if mem is not None else 0
    return dict(compile_s=compile_s, step_s=best, flops=flops, temp_bytes=temp)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul GFLOP/s on this machine (the roofline's compute peak)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    r = timed(lambda x: x @ x, (a,), repeats)
    return 2 * n ** 3 / r["step_s"] / 1e9


def bench_level(name: str, t: int, b: int, h: int, d: int, c: int, repeats: int) -> dict:
    level = LEVELS[name](c)
    params = level.memory.init(jax.random.PRNGKey(1), h, d, d)
    x = inputs(b, t, h, d)
    spec = level.spec
    gates = dict(eta=x["eta"])
    if spec.retention or spec.dgd_gated:
        gates["alpha"] = x["alpha"]
    if spec.momentum_slot is not None:
        gates["beta"] = x["beta"]

    def loss(scan, lv):
        def f(p, q, k, v, g):
            y, _ = scan(lv, lv.init_state(p, b), q, k, v, **g)
            return jnp.mean(jnp.square(y))
        return f

    args = (params, x["q"], x["k"], x["v"], gates)  # gates are arguments, not baked-in constants
    row = dict(level=name, T=t, B=b, H=h, d_head=d, chunk=c, path=level.path)
    for label, scan in (("chunked", core.chunked_scan), ("reference", core.reference_scan)):
        f = loss(scan, level)
        print(f"  {name:13s} T={t:6d} {label:9s} forward ...", flush=True)
        row[f"{label}_forward"] = timed(f, args, repeats)
        if label == "reference" and t > REFERENCE_FB_MAX_TOKENS[name]:
            row[f"{label}_forward_backward"] = None
            continue
        print(f"  {name:13s} T={t:6d} {label:9s} forward+backward ...", flush=True)
        row[f"{label}_forward_backward"] = timed(jax.grad(f, argnums=(0, 1, 2, 3)), args, repeats)
    for mode in ("forward", "forward_backward"):
        ref, ch = row[f"reference_{mode}"], row[f"chunked_{mode}"]
        row[f"speedup_{mode}"] = None if ref is None else ref["step_s"] / ch["step_s"]
    # XLA's cost analysis counts a loop body once, so count one chunk (T = C, one scan step) and
    # scale by the number of chunks: the work is linear in T.
    xc = inputs(b, c, h, d)
    gc = {name: xc[name] for name in gates}
    one = jax.jit(jax.grad(loss(core.chunked_scan, level), argnums=(0, 1, 2, 3))).lower(
        params, xc["q"], xc["k"], xc["v"], gc).compile().cost_analysis()
    one = one[0] if isinstance(one, (list, tuple)) else one
    row["chunked_forward_backward_flops"] = float(one.get("flops", 0.0)) * (t / c)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="T = 256 and 1024 only, 1 repeat")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "chunked_scan.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats = [256, 1024], 1

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores",
          flush=True)
    peak = matmul_peak()
    print(f"measured float32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.levels:
        for t in args.lengths:
            row = bench_level(name, t, args.batch, args.heads, args.d_head, args.chunk,
                              args.repeats)
            fb = row["chunked_forward_backward"]
            row["chunked_gflops_per_s"] = row["chunked_forward_backward_flops"] / fb["step_s"] / 1e9
            row["chunked_fraction_of_peak"] = row["chunked_gflops_per_s"] / peak
            rows.append(row)

    # Time per token at the longest length relative to the shortest, per level.
    scaling = {}
    for name in args.levels:
        mine = [r for r in rows if r["level"] == name]
        lo, hi = min(mine, key=lambda r: r["T"]), max(mine, key=lambda r: r["T"])
        per_tok = lambda r: r["chunked_forward_backward"]["step_s"] / r["T"]
        scaling[name] = dict(T_short=lo["T"], T_long=hi["T"], ratio=per_tok(hi) / per_tok(lo))

    header = (f"{'level':13s} {'T':>6s} {'fwd ms':>8s} {'ref fwd':>8s} {'x':>5s} {'f+b ms':>8s} "
              f"{'ref f+b':>8s} {'x':>5s} {'GFLOP/s':>8s} {'%peak':>6s} {'temp MiB':>9s} "
              f"{'compile s':>9s}")
    print("\n" + header)
    for r in rows:
        cf, cb = r["chunked_forward"], r["chunked_forward_backward"]
        rf, rb = r["reference_forward"], r["reference_forward_backward"]
        fmt = lambda v, s=1e3: "-" if v is None else f"{v['step_s'] * s:8.1f}"
        sp = lambda v: "-" if v is None else f"{v:5.1f}"
        print(f"{r['level']:13s} {r['T']:6d} {fmt(cf)} {fmt(rf)} {sp(r['speedup_forward'])} "
              f"{fmt(cb)} {fmt(rb)} {sp(r['speedup_forward_backward'])} "
              f"{r['chunked_gflops_per_s']:8.1f} "
              f"{100 * r['chunked_fraction_of_peak']:6.1f} {cb['temp_bytes'] / 2 ** 20:9.1f} "
              f"{cf['compile_s'] + cb['compile_s']:9.1f}")
    for name, s in scaling.items():
        print(f"{name}: time per token (f+b) at T={s['T_long']} is {s['ratio']:.2f}x that at "
              f"T={s['T_short']}")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    result = dict(jax=jax.__version__, python=sys.version.split()[0], machine=platform.machine(),
                  cores=os.cpu_count(), matmul_peak_gflops=peak, rows=rows, scaling=scaling,
                  note="steady-state times are the best of --repeats; compile time is separate")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
