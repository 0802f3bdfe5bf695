"""Benchmark: hope_jax deep optimizers against AdamW on a small MLP (not a test).

Task: teacher–student regression. Inputs x ~ N(0, I_64); targets from a fixed random teacher
`y = 2 tanh(1.5 x T1) T2` (64 → 128 → 16); student MLP 64 → 256 → 256 → 16 with GELU, MSE loss.
Each optimizer trains for the same number of steps from the same initialisation on the same
batches (a fixed pool of pre-generated batches, cycled), for each learning rate of a small grid;
the best learning rate (lowest held-out loss) is reported.

Timing: the jitted train step (forward, backward, optimizer, apply) of each optimizer at its best
learning rate is compiled ahead of time (compile time reported apart), then timed in blocks of
steps, interleaving the optimizers round by round to spread machine noise; the reported step time
is the median block time per step, and the ratio is against AdamW's median.

Why the batch matters for Muon/M3: Newton–Schulz costs about 5·3·2·n³ flops per n×n matrix, the
forward and backward about 6·B·n², so the NS overhead relative to the model is ~5n/B. An LM step
has B (tokens) ≫ n (width); the default B = 16 n keeps that ratio in the same regime on a CPU.

Usage: python experiments/bench/bench_optimizers.py [--steps 300] [--batch 4096] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import hope_jax.optim as ho

D_IN, WIDTH, D_OUT, TEACHER_WIDTH = 64, 256, 16, 128
N_BATCHES = 32
N_EVAL = 8192

# name -> (constructor of learning rate, learning-rate grid). Other settings are the defaults.
OPTIMIZERS: dict[str, tuple[Callable[[float], optax.GradientTransformation], list[float]]] = {
    "adamw": (lambda lr: optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=0.01), [3e-3, 1e-2, 3e-2]),
    "muon": (lambda lr: ho.muon(lr, weight_decay=0.01), [0.05, 0.1, 0.2]),
    "m3": (lambda lr: ho.m3(lr, weight_decay=0.01), [1e-6, 3e-6, 1e-5]),
    "dmgd": (lambda lr: ho.dmgd(lr, weight_decay=0.01), [0.1, 0.3, 1.0]),
    "delta_momentum": (lambda lr: ho.delta_momentum(lr, weight_decay=0.01), [0.1, 0.3, 1.0]),
    "momentum (reference)": (lambda lr: ho.preconditioned_momentum(lr, weight_decay=0.01),
                             [0.1, 0.3, 1.0]),
}


def _json_float(x: float) -> float | None:
    """NaN/inf (a diverged run) as JSON null."""
    return float(x) if np.isfinite(x) else None


def teacher(x: jax.Array) -> jax.Array:
    """Fixed random 2-layer tanh teacher, (..., 64) -> (..., 16)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    t1 = jax.random.normal(k1, (D_IN, TEACHER_WIDTH)) / np.sqrt(D_IN)
    t2 = jax.random.normal(k2, (TEACHER_WIDTH, D_OUT)) / np.sqrt(TEACHER_WIDTH)
    return 2.0 * jnp.tanh(1.5 * x @ t1) @ t2


def init_mlp(key: jax.Array) -> dict:
    """Student MLP 64 -> 256 -> 256 -> 16, LeCun-normal kernels (d_in, d_out), zero biases."""
    sizes = [D_IN, WIDTH, WIDTH, D_OUT]
    keys = jax.random.split(key, 3)
    return {
        f"layer{i}": {
            "kernel": jax.random.normal(keys[i], (sizes[i], sizes[i + 1])) / np.sqrt(sizes[i]),
            "bias": jnp.zeros(sizes[i + 1]),
        }
        for i in range(3)
    }


def mlp(params: dict, x: jax.Array) -> jax.Array:
    for i in range(3):
        x = x @ params[f"layer{i}"]["kernel"] + params[f"layer{i}"]["bias"]
        if i < 2:
            x = jax.nn.gelu(x)
    return x


def mse(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((mlp(params, x) - y) ** 2)


def make_step(tx: optax.GradientTransformation):
    """One jitted train step on batch `i` of the pool: (params, state, xs, ys, i) -> (params, state,
    loss)."""

    @jax.jit
    def step(params, state, xs, ys, i):
        loss, grads = jax.value_and_grad(mse)(params, xs[i], ys[i])
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


def train(tx, data, steps: int) -> dict:
    """Trains from the fixed initialisation; returns losses and the compiled step."""
    xs, ys, x_eval, y_eval = data
    params = init_mlp(jax.random.PRNGKey(0))
    state = tx.init(params)
    t0 = time.perf_counter()
    step = make_step(tx).lower(params, state, xs, ys, 0).compile()
    compile_s = time.perf_counter() - t0
    losses = []
    for k in range(steps):
        params, state, loss = step(params, state, xs, ys, k % N_BATCHES)
        losses.append(loss)
    losses = [float(x) for x in jax.device_get(losses)]
    return {
        "compile_s": compile_s,
        "final_train_loss": float(np.mean(losses[-20:])),
        "eval_loss": float(mse(params, x_eval, y_eval)),
        "step": step,
        "params": params,
        "state": state,
    }


def time_steps(runs: dict, data, rounds: int, block: int) -> dict[str, list[float]]:
    """Per-step seconds of each compiled step, in blocks of `block` steps, optimizers
    interleaved."""
    xs, ys, _, _ = data
    times = {name: [] for name in runs}
    carry = {name: (run["params"], run["state"]) for name, run in runs.items()}
    for name, run in runs.items():  # warm-up block
        params, state = carry[name]
        for k in range(3):
            params, state, loss = run["step"](params, state, xs, ys, k % N_BATCHES)
        jax.block_until_ready(loss)
        carry[name] = (params, state)
    for _ in range(rounds):
        for name, run in runs.items():
            params, state = carry[name]
            t0 = time.perf_counter()
            for k in range(block):
                params, state, loss = run["step"](params, state, xs, ys, k % N_BATCHES)
            jax.block_until_ready((params, state, loss))
            times[name].append((time.perf_counter() - t0) / block)
            carry[name] = (params, state)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7,
                        help="timing rounds (each: one block per optimizer)")
    parser.add_argument("--block", type=int, default=20, help="steps per timing block")
    parser.add_argument("--only", nargs="*", default=None,
                        help="subset of optimizers (adamw is always run)")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "results", "optimizers.json"))
    args = parser.parse_args()

    names = (list(OPTIMIZERS) if not args.only
             else ["adamw"] + [n for n in args.only if n != "adamw"])
    kx, ke = jax.random.split(jax.random.PRNGKey(2))
    xs = jax.random.normal(kx, (N_BATCHES, args.batch, D_IN))
    x_eval = jax.random.normal(ke, (N_EVAL, D_IN))
    data = (xs, jax.vmap(teacher)(xs), x_eval, teacher(x_eval))

    results, best_runs = {}, {}
    for name in names:
        make, grid = OPTIMIZERS[name]
        sweep = {}
        for lr in grid:
            run = train(make(lr), data, args.steps)
            sweep[lr] = run
            print(f"  {name:22s} lr={lr:<8g} eval={run['eval_loss']:.4f} "
                  f"train={run['final_train_loss']:.4f} compile={run['compile_s']:.2f}s",
                  flush=True)
        finite = {lr: r for lr, r in sweep.items() if np.isfinite(r["eval_loss"])}
        best_lr = min(finite, key=lambda lr: finite[lr]["eval_loss"]) if finite else grid[0]
        best_runs[name] = sweep[best_lr]
        results[name] = {
            "best_learning_rate": best_lr,
            "eval_loss": _json_float(sweep[best_lr]["eval_loss"]),
            "final_train_loss": _json_float(sweep[best_lr]["final_train_loss"]),
            "compile_s": sweep[best_lr]["compile_s"],
            "sweep": {str(lr): {"eval_loss": _json_float(r["eval_loss"]),
                                "final_train_loss": _json_float(r["final_train_loss"])}
                      for lr, r in sweep.items()},
        }

    times = time_steps(best_runs, data, args.rounds, args.block)
    base = statistics.median(times["adamw"])
    for name in names:
        med = statistics.median(times[name])
        results[name].update({"step_ms": 1e3 * med, "step_ms_min": 1e3 * min(times[name]),
                              "step_time_vs_adamw": med / base})

    header = (f"{'optimizer':22s} {'best lr':>8s} {'eval loss':>10s} {'train loss':>10s} "
              f"{'step ms':>8s} {'vs AdamW':>8s} {'compile s':>9s}")
    print(f"\nMLP {D_IN}-{WIDTH}-{WIDTH}-{D_OUT}, batch {args.batch}, {args.steps} steps, "
          f"jax {jax.__version__}, {jax.devices()[0].platform}")
    print(header)
    print("-" * len(header))
    for name in names:
        r = results[name]
        eval_loss, train_loss = (float("nan") if x is None else x
                                 for x in (r["eval_loss"], r["final_train_loss"]))
        print(f"{name:22s} {r['best_learning_rate']:>8g} {eval_loss:>10.4f} {train_loss:>10.4f} "
              f"{r['step_ms']:>8.2f} {r['step_time_vs_adamw']:>7.2f}x {r['compile_s']:>9.2f}")

    record = {
        "benchmark": "bench_optimizers",
        "task": f"teacher-student regression, MLP {D_IN}-{WIDTH}-{WIDTH}-{D_OUT} GELU, MSE",
        "steps": args.steps,
        "batch": args.batch,
        "timing": {"rounds": args.rounds, "block_steps": args.block,
                   "statistic": "median per-step time"},
        "jax": jax.__version__,
        "optax": optax.__version__,
        "backend": jax.devices()[0].platform,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2, allow_nan=False)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
