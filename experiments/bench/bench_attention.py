"""Benchmark: one training step of Transformer++ and Titans MAG at a long context (not a test).

For each model (the `tiny` preset, batch 1, T = 16384 by default) and each attention
implementation, builds the trainer's own step (`make_train_step` with the AdamW outer optimizer)
and reports:

  compiled_gib   XLA's estimate of the compiled step's memory (temporaries + arguments + outputs,
                 `memory_analysis()`), GiB
  peak_rss_gib   the measured peak resident memory of a fresh process that compiled and ran the
                 step (`ru_maxrss`; includes Python, jax and the compiler), GiB
  tokens_per_s   B·T / best step time (after one warm-up step)

The dense reference ("dense": masked T × T logits) is only compiled, never run (its estimate is
the point of comparison); "xla" (blockwise) is compiled and run, each model in its own process.
Prints a table and writes JSON (default experiments/bench/results/attention.json).

    python experiments/bench/bench_attention.py [--length 16384] [--steps 2] [--block 512]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

GIB = 2 ** 30
MODELS = ("transformer", "titans_mag")


def build_step(arch: str, length: int, impl: str, block: int, size: str = "tiny"):
    """(jitted train step, state, batch) for the `size` preset of `arch` at context `length`."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hope_jax.config.defaults import default_config
    from hope_jax.layers.attention import configure_attention
    from hope_jax.models.decoder import Decoder
    from hope_jax.models.presets import get_config
    from hope_jax.optim.outer import make_optimizer
    from hope_jax.train.state import ParamCodec, TrainState
    from hope_jax.train.step import make_apply, make_train_step

    cfg = configure_attention(get_config(arch, size, max_len=length),
                              implementation=impl, block_size=block)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    codec = ParamCodec(params)
    flat = codec.to_flat(params)
    optim = default_config().optim
    tx, schedule = make_optimizer(optim, 100)
    step = make_train_step(make_apply(graphdef, rest, codec), tx, schedule, pad_id=-1)
    state = TrainState(jnp.zeros((), jnp.int32), flat, tx.init(flat), jnp.zeros((), jnp.int32))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (1, length + 1), 0, cfg.vocab_size)
    return jax.jit(step), state, tokens


def child(arch: str, length: int, impl: str, block: int, steps: int) -> dict:
    """Compile (and for impl != 'dense' run) one model's step; runs in a fresh process."""
    import jax
    import jax.numpy as jnp

    jitted, state, tokens = build_step(arch, length, impl, block)
    poison = jnp.zeros((), bool)
    t0 = time.perf_counter()
    compiled = jitted.lower(state, tokens, poison).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    out = dict(model=arch, implementation=impl, length=length, block=block,
               compile_s=round(compile_s, 1),
               compiled_gib=round((mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                   + mem.output_size_in_bytes) / GIB, 3),
               temp_gib=round(mem.temp_size_in_bytes / GIB, 3))
    if impl != "dense":
        times, loss = [], float("nan")
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            state, metrics = compiled(state, tokens, poison)
            loss = float(jax.block_until_ready(metrics["loss"]))
            times.append(time.perf_counter() - t0)
        best = min(times[1:]) if steps else times[0]
        out.update(step_s=round(best, 2), tokens_per_s=round(length / best, 1),
                   loss=round(loss, 4))
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--implementations", nargs="+", default=["xla", "dense"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "attention.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the other rows of an existing --out file (replace only these)")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.length, args.child[1], args.block, args.steps)))
        return
    rows = []
    for arch in args.models:
        for impl in args.implementations:
            cmd = [sys.executable, __file__, "--child", arch, impl, "--length", str(args.length),
                   "--block", str(args.block), "--steps", str(args.steps)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                rows.append(dict(model=arch, implementation=impl, error=res.stderr[-2000:]))
            else:
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    import jax
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine(),
                cpus=os.cpu_count(), batch=1, preset="tiny", optimizer="adamw")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.merge and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)["rows"]
        done = {(r["model"], r["implementation"]) for r in rows}
        rows = [r for r in old if (r["model"], r["implementation"]) not in done] + rows
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print(f"{'model':12} {'impl':6} {'compiled GiB':>12} {'peak RSS GiB':>12} {'tokens/s':>9}")
    for r in rows:
        print(f"{r['model']:12} {r['implementation']:6} {r.get('compiled_gib', '-'):>12} "
              f"{r.get('peak_rss_gib', '-'):>12} {r.get('tokens_per_s', '-'):>9}")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
