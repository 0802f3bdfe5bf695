"""Benchmark: training throughput and peak memory vs sequence length, Hope vs Titans (MAG) vs
Transformer++ (tiny, parameter-matched as in experiments/compare/tiny.py; batch 1). Not a test.

What is timed: one jitted training step = forward + backward + AdamW update (optax.adamw,
clip 1.0) on a [1, T + 1] batch of random byte tokens, params and optimizer state donated.
The step is compiled ahead of time (`jit(...).lower(...).compile()`, compile time reported
apart), run once to warm up, then timed `repeats` times (fewer at long T), the models at one T
interleaved round-robin so machine noise falls on all of them alike; tokens/s = T / median step
time.

Peak memory: XLA's compiled memory analysis of the step (`compiled.memory_analysis()`):
`temp + argument + output − alias` bytes (params, optimizer state, batch and every intermediate
XLA keeps alive at once; donated outputs alias their inputs). It is known before the step runs,
so a configuration whose estimate exceeds `--max_gb` is compiled but not executed (reported as
"does not fit").

MFU: model FLOP/s ÷ peak FLOP/s. Peak = best of 5 jnp float32 matmuls (2048 × 2048, and
1024 × 1024; the larger) measured at the start of the run on this host. Model FLOPs per token
are analytic, the trainer's formula (hope_jax/train/loop.py): 6·N + 12·L·d·T (N = parameters
except the embedding table; 12·L·d·T counts causal attention's QKᵀ and PV forward + backward
in every block). The same formula for every model, so MFU ranks "useful work per second"; the
memories' inner updates (Hope, Titans) are not counted, and for Titans MAG's sliding window
and Hope (no attention) the 12·L·d·T term is an over-count of their token mixing. XLA's
`cost_analysis()` FLOPs are stored too (`xla_flops`) but they count a loop body once, so they
under-count the chunked scans.

Usage:
    python experiments/bench/bench_models.py                   # T = 1K, 2K, 4K, 16K (≈ 10 min)
    python experiments/bench/bench_models.py --lengths 1024,2048,4096,8192,16384,32768
    python experiments/bench/bench_models.py --quick           # T = 128, 256; 2 repeats
    python experiments/bench/bench_models.py --lengths 1024,2048 --models hope,transformer
Writes experiments/bench/results/models.json (+ models.png) and prints a table.
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
import optax
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

from hope_jax.train import loop as train_loop

# name → (arch, config overrides): the parameter matching of experiments/compare/tiny.py.
MODELS = {
    "hope": ("hope", {}),
    "titans_mag": ("titans_mag", {}),
    "transformer": ("transformer", {"model.num_blocks": 3}),
}
DEFAULT_LENGTHS = (1024, 2048, 4096, 16384)   # + 8192, 32768 with --lengths (≈ 2× longer)


def decoder_config(name: str, seq_len: int, size: str = "tiny"):
    from hope_jax.config.build import decoder_config as build
    from hope_jax.config.experiments import experiment_config
    arch, overrides = MODELS[name]
    c = experiment_config(arch, size)
    c.data.seq_len = int(seq_len)
    for key, value in overrides.items():
        group, _, k = key.partition(".")
        c[group][k] = value
    return build(c, 260)


def measure_peak_flops(repeats: int = 5) -> dict:
    """Best-of-`repeats` float32 matmul FLOP/s at n = 1024 and 2048 (the trainer's measurement)."""
    out = {f"matmul_{n}": train_loop.measure_peak_flops("float32", n, repeats)
           for n in (1024, 2048)}
    out["peak"] = max(out.values())
    return out


def analytic_flops_per_token(cfg, params: dict, seq_len: int) -> float:
    n = sum(int(np.prod(v.shape)) for k, v in params.items() if k != "embed")
    return 6.0 * n + 12.0 * cfg.num_blocks * cfg.d_model * seq_len


def build_loss(cfg, loss_chunk: int = 0):
    """(loss_fn, params): loss_fn(params, tokens [B, T + 1]) → mean next-token cross-entropy of a
    fresh Decoder of `cfg`, params a flat {name: array} dict (hope_jax.train.state.ParamCodec).
    loss_chunk > 0: the output head and loss that many positions at a time (model.loss_chunk)."""
    from hope_jax.models import Decoder
    from hope_jax.train.state import ParamCodec
    from hope_jax.train.step import chunked_apply_nll
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    codec = ParamCodec(params)
    if loss_chunk > 0:
        nll = chunked_apply_nll(lambda p: nnx.merge(graphdef, codec.to_state(p), rest),
                                loss_chunk)
        return (lambda p, tokens: nll(p, tokens).mean()), codec.to_flat(params)

    def loss_fn(p, tokens):
        m = nnx.merge(graphdef, codec.to_state(p), rest)
        logits = m(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    return loss_fn, codec.to_flat(params)


def build_step(cfg, lr: float = 1e-3, loss_chunk: int = 0):
    """(step, params, opt_state): step(params, opt_state, tokens) → (params, opt_state, loss),
    params a flat {name: array} dict (hope_jax.train.state.ParamCodec), jitted with donation."""
    loss_fn, flat = build_loss(cfg, loss_chunk)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, b1=0.9, b2=0.95))

    def step(p, o, tokens):
        loss, g = jax.value_and_grad(loss_fn)(p, tokens)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss

    # Donation needs one buffer per leaf: some leaves (zero initial states, Adam's moments)
    # may share a buffer, so every leaf gets its own copy.
    own = lambda t: jax.tree.map(lambda x: jnp.array(x, copy=True), t)
    flat = own(flat)
    return jax.jit(step, donate_argnums=(0, 1)), flat, own(tx.init(flat))


def memory_bytes(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:
        m = None
    if m is None:
        return {}
    d = {k: int(getattr(m, f"{k}_size_in_bytes", 0))
         for k in ("temp", "argument", "output", "alias")}
    d["peak"] = d["temp"] + d["argument"] + d["output"] - d["alias"]
    return d


def xla_flops(compiled) -> float | None:
    try:
        c = compiled.cost_analysis()
        c = c[0] if isinstance(c, (list, tuple)) else c
        return float(c.get("flops")) if c and c.get("flops") is not None else None
    except Exception:
        return None


class Case:
    """One model at one T: compiled step, its state, and its row."""

    def __init__(self, name: str, T: int, max_gb: float, size: str):
        cfg = decoder_config(name, T, size)
        step, self.params, self.opt = build_step(cfg)
        self.tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, T + 1)), jnp.int32)
        n_params = sum(int(np.prod(v.shape)) for v in self.params.values())
        t0 = time.perf_counter()
        self.compiled = step.lower(self.params, self.opt, self.tokens).compile()
        compile_s = time.perf_counter() - t0
        mem = memory_bytes(self.compiled)
        self.row = dict(model=name, seq_len=T, batch=1, params=n_params, compile_s=compile_s,
                        memory_bytes=mem, peak_gb=mem.get("peak", 0) / 2 ** 30 if mem else None,
                        xla_flops=xla_flops(self.compiled),
                        flops_per_token=analytic_flops_per_token(cfg, self.params, T),
                        status="ok", tokens_per_s=None, step_s=None, mfu=None, step_times=[])
        self.fits = not (mem and mem["peak"] > max_gb * 2 ** 30)
        if not self.fits:
            self.row["status"] = (f"does not fit (estimate {mem['peak'] / 2 ** 30:.1f} GB > "
                                  f"{max_gb} GB)")

    def run(self) -> float:
        t0 = time.perf_counter()
        self.params, self.opt, loss = self.compiled(self.params, self.opt, self.tokens)
        loss.block_until_ready()
        self.row["loss"] = float(loss)
        return time.perf_counter() - t0


def bench_length(names: list[str], T: int, repeats: int, max_gb: float, peak: float,
                 size: str) -> list[dict]:
    """Every model at T: compile all, warm up each, then time the steps round-robin (model A,
    B, C, A, B, C, …) so that machine noise is spread evenly over the models being compared."""
    cases = [Case(n, T, max_gb, size) for n in names]
    live = [c for c in cases if c.fits]
    for c in live:
        c.run()                                   # warm-up
    for _ in range(repeats):
        for c in live:
            c.row["step_times"].append(c.run())
    for c in live:
        med = statistics.median(c.row["step_times"])
        c.row.update(step_s=med, tokens_per_s=T / med,
                     mfu=T / med * c.row["flops_per_token"] / peak)
    return [c.row for c in cases]


def repeats_for(T: int, base: int) -> int:
    return max(1, base if T <= 2048 else base // 2 if T <= 8192 else 2)


def ratios(rows: list[dict], num: str = "hope", den: str = "transformer") -> dict:
    by = {(r["model"], r["seq_len"]): r for r in rows}
    out = {}
    for (m, T), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        if m != num or (den, T) not in by:
            continue
        a, b = r.get("tokens_per_s"), by[(den, T)].get("tokens_per_s")
        if a and b:
            out[str(T)] = a / b
        elif a and not b:
            out[str(T)] = None  # the denominator did not fit
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == m]
        ok = [r for r in rs if r.get("tokens_per_s")]
        axes[0].plot([r["seq_len"] for r in ok], [r["tokens_per_s"] for r in ok], "o-", label=m)
        mm = [r for r in rs if r.get("peak_gb") is not None]
        axes[1].plot([r["seq_len"] for r in mm], [r["peak_gb"] for r in mm], "o-", label=m)
    for ax, yl in zip(axes, ("training tokens/s (batch 1)", "peak memory (GB, XLA estimate)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(yl)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="training tokens/s and memory vs sequence length")
    ap.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=4, help="timed steps at T ≤ 2K (fewer above)")
    ap.add_argument("--max_gb", type=float, default=8.0,
                    help="skip running a step whose XLA memory estimate exceeds this")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--quick", action="store_true", help="T = 128, 256, 2 repeats (tests)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "models.json"))
    ap.add_argument("--no_plot", action="store_true")
    args = ap.parse_args(argv)
    lengths = [128, 256] if args.quick else [int(x) for x in args.lengths.split(",")]
    repeats = 2 if args.quick else args.repeats
    models = args.models.split(",")
    peak = measure_peak_flops()
    print(f"peak float32 matmul: {peak['peak'] / 1e9:.1f} GFLOP/s "
          f"(1024: {peak['matmul_1024'] / 1e9:.1f}, 2048: {peak['matmul_2048'] / 1e9:.1f})",
          flush=True)
    rows = []
    t_start = time.perf_counter()
    print(f"{'model':12s} {'T':>6s} {'params':>8s} {'compile s':>9s} {'step s':>8s} "
          f"{'tokens/s':>9s} {'MFU':>6s} {'peak GB':>8s}", flush=True)
    for T in lengths:   # all models at one T, interleaved: ratios come from one run
        for r in bench_length(models, T, repeats_for(T, repeats), args.max_gb, peak["peak"],
                              args.size):
            rows.append(r)
            m = r["model"]
            f = lambda x, s: ("—" if x is None else s.format(x))
            print(f"{m:12s} {T:6d} {r['params']:8d} {r['compile_s']:9.1f} "
                  f"{f(r.get('step_s'), '{:8.3f}'):>8s} {f(r.get('tokens_per_s'), '{:9.0f}'):>9s} "
                  f"{f(r.get('mfu'), '{:6.1%}'):>6s} {f(r.get('peak_gb'), '{:8.2f}'):>8s}"
                  + ("" if r["status"] == "ok" else f"  {r['status']}"), flush=True)
    rat = ratios(rows)
    print("Hope / Transformer++ tokens/s: " + ", ".join(
        f"T={T}: {'—' if v is None else f'{v:.2f}×'}" for T, v in rat.items()))
    import subprocess
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    out = dict(git_commit=commit, command=" ".join(["python", os.path.relpath(__file__)]
                                                  + list(sys.argv[1:] if argv is None else argv)),
               benchmark="bench_models", host=platform.node(), cpus=os.cpu_count(),
               platform=jax.devices()[0].platform, jax=jax.__version__,
               lengths=lengths, models=models, peak_flops=peak,
               memory_method="compiled.memory_analysis(): temp + argument + output - alias bytes",
               flops_method="analytic 6*N_nonembed + 12*L*d*T per token (trainer's formula)",
               wall_s=time.perf_counter() - t_start, rows=rows,
               ratio_hope_over_transformer=rat)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    if not args.no_plot:
        plot(rows, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
