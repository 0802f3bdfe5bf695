"""Benchmark of the kernel ops: every available implementation across shapes (not a test).

Times `hope_jax.kernels.linear_chunk_update` (DGD on L2, pre-write reads: Hope's linear memory /
DeltaNet-like) and `mlp_chunk_update` (residual MLP, expansion 4, DGD + momentum + retention:
self-modifying Titans), forward and forward+backward, for each implementation this backend runs:

  TPU: xla, pallas_tpu        GPU: xla, pallas_gpu        CPU: reference, xla
  (+ "interpret" at the tiny shape only: the Pallas interpreter is for correctness, not speed;
   + "reference" at the smallest shape on accelerators, as a sanity anchor)

Compile time (trace + lower + compile) is reported apart from the steady state (best of
--repeats, after one warm-up). Prints a table and writes JSON (default
experiments/bench/results/kernels.json) with the device, versions and every row.

    python experiments/bench/bench_kernels.py            # shapes for this backend
    python experiments/bench/bench_kernels.py --quick    # smallest shapes only
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

from hope_jax.kernels import _dispatch
from hope_jax.kernels.linear_chunk_update import linear_chunk_update
from hope_jax.kernels.mlp_chunk_update import mlp_chunk_update

# (B, T, H, d, C) per backend; the first shape is the "tiny" one.
SHAPES = {
    "cpu": [(1, 128, 1, 32, 16), (2, 1024, 4, 64, 64)],
    "tpu": [(2, 1024, 4, 64, 64), (8, 4096, 8, 128, 64), (4, 16384, 8, 128, 64)],
    "gpu": [(2, 1024, 4, 64, 64), (8, 4096, 8, 64, 64), (8, 4096, 8, 128, 64)],
}
KERNEL = {"tpu": "pallas_tpu", "gpu": "pallas_gpu", "cpu": None}


def make_inputs(op: str, b: int, t: int, h: int, d: int, dtype, seed: int = 0) -> dict:
    ks = jax.random.split(jax.random.PRNGKey(seed), 9)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    x = dict(q=unit(jax.random.normal(ks[0], (b, t, h, d))).astype(dtype),
             k=unit(jax.random.normal(ks[1], (b, t, h, d))).astype(dtype),
             v=jax.random.normal(ks[2], (b, t, h, d)).astype(dtype),
             eta=jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h)) - 2.0),
             alpha=jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h)) + 5.0))
    if op == "linear":
        x["w0"] = 0.02 * jax.random.normal(ks[5], (b, h, d, d))
    else:
        x["beta"] = jax.nn.sigmoid(jax.random.normal(ks[6], (b, t, h)) + 2.0)
        x["params"] = (d ** -0.5 * jax.random.normal(ks[7], (b, h, 4 * d, d)),
                       0.02 * jax.random.normal(ks[8], (b, h, d, 4 * d)))
    return x


def op_fn(op: str, impl: str, c: int):
    if op == "linear":
        def f(x):
            return linear_chunk_update(x["q"], x["k"], x["v"], x["eta"], x["alpha"], x["w0"],
                                       chunk_size=c, read="pre", implementation=impl)
    else:
        def f(x):
            y, p, s = mlp_chunk_update(x["q"], x["k"], x["v"], x["eta"], x["alpha"], x["beta"],
                                       x["params"], None, chunk_size=c, read="pre",
                                       implementation=impl)
            return y, p + s
    return f


def loss_of(f):
    def loss(x):
        y, state = f(x)
        return (jnp.sum(y.astype(jnp.float32) ** 2)
                + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(state)))
    return loss


def timed(fn, x, repeats: int) -> dict:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(x).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(x))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x))
        best = min(best, time.perf_counter() - t0)
    return dict(compile_s=compile_s, step_s=best)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest shapes only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--ops", nargs="+", default=["linear", "mlp"], choices=["linear", "mlp"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "kernels.json"))
    args = parser.parse_args(argv)
    plat = _dispatch.backend_platform()
    shapes = SHAPES.get(plat, SHAPES["cpu"])
    shapes = shapes[:2] if args.quick else shapes
    dtype = jnp.dtype(args.dtype)
    rows = []
    header = (f"{'op':6s} {'B,T,H,d,C':>22s} {'impl':11s} {'mode':8s} {'compile s':>10s} "
              f"{'step ms':>10s} {'Mtok/s':>8s}")
    print(f"device: {jax.devices()[0].device_kind} ({plat}), jax {jax.__version__}, "
          f"dtype {dtype.name}")
    print(header)
    print("-" * len(header))
    for op in args.ops:
        for i, (b, t, h, d, c) in enumerate(shapes):
            impls = ["xla"]
            if KERNEL[plat]:
                impls.append(KERNEL[plat])
            if i == 0:
                impls = ["reference"] + impls + ["interpret"] * (plat == "cpu")
            elif plat == "cpu" and t <= 1024:
                impls = ["reference"] + impls
            x = make_inputs(op, b, t, h, d, dtype)
            for impl in impls:
                f = op_fn(op, impl, c)
                for mode, fn in (("fwd", f), ("fwd+bwd", jax.grad(loss_of(f)))):
                    try:
                        r = timed(fn, x, args.repeats)
                        err = None
                    except Exception as e:  # report and continue
                        r, err = dict(compile_s=float("nan"), step_s=float("nan")), repr(e)[:300]
                    row = dict(op=op, B=b, T=t, H=h, d=d, C=c, impl=impl, mode=mode,
                               dtype=dtype.name, error=err, **r)
                    rows.append(row)
                    tok = b * t / r["step_s"] / 1e6 if r["step_s"] == r["step_s"] else float("nan")
                    print(f"{op:6s} {f'{b},{t},{h},{d},{c}':>22s} {impl:11s} {mode:8s} "
                          f"{r['compile_s']:10.2f} {1e3 * r['step_s']:10.2f} {tok:8.3f}"
                          + (f"  ERROR {err}" if err else ""), flush=True)
    meta = dict(device=jax.devices()[0].device_kind, platform=plat, jax=jax.__version__,
                python=sys.version.split()[0], host=platform.node(), dtype=dtype.name,
                time=time.strftime("%Y-%m-%d %H:%M:%S"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(meta=meta, rows=rows), fh, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
