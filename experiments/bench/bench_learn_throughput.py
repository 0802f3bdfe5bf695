"""Throughput of `hope_jax.learn.Learner` against plain evaluation, measured in alternation.

    python experiments/bench/bench_learn_throughput.py [--arch hope] [--batch 8] [--window 128]

A tiny model at random initialisation (speed does not depend on training) reads [B, W] windows:
  * learn: the learner's default groups (every CMS level at its own chunk, Adam), with the
    default backward (`memory_gradient="stop"`: the mixers' memory writes are constants);
  * learn_full_gradient: the same with `memory_gradient="full"` (through the writes too);
  * stream_eval: the same learner frozen (forward only, state carried segment to segment);
  * plain_eval: `model(tokens)` over [32, T] windows, no state;
each learner once with the state kept in fresh form between segments (the default where the
segments are whole chunks, core/fresh_form.py) and once streaming with positions (the path
before); learn_full_gradient in fresh form only. Tokens/s are medians over rounds; ratios are
taken within this one run.

With `--batches 4,32,128` it instead sweeps the batch: at each B, learning (fresh form) over B
streams against plain evaluation of [B, T] windows, the same number of rows, so the ratio is
not a matter of one side's batch being larger. Writes results/learn_throughput.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_json import write_results  # noqa: E402

from hope_jax.learn import GroupSpec, Learner  # noqa: E402
from hope_jax.models import Decoder, get_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="hope")
    ap.add_argument("--seq_len", type=int, default=64, help="the model's training length T")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="",
                    help="comma-separated batch sizes: the same-batch sweep (see above)")
    ap.add_argument("--memory_gradient", default="stop", choices=("stop", "full"),
                    help="the --batches sweep's learn backward through the memory writes")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "learn_throughput.json"))
    args = ap.parse_args()
    t = args.seq_len
    model = Decoder(get_config(args.arch, "tiny", max_len=t), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    if args.batches:
        rows = [batch_row(model, rng, t, int(b), args) for b in args.batches.split(",")]
        write_results(args.out, args, rows)
        return
    rows = jnp.asarray(rng.integers(0, vocab, (args.batch, args.window + 1)), jnp.int32)
    runs = {}
    cases = [(fresh, name, frozen, "stop") for fresh in (True, False)
             for name, frozen in (("learn", False), ("stream_eval", True))]
    cases.insert(1, (True, "learn_full_gradient", False, "full"))
    for fresh, name, frozen, gradient in cases:
        learner = Learner(model, [GroupSpec(("cms",), optimizer="adam", lr=1e-3)],
                          seq_len=t, frozen=frozen, memory_gradient=gradient)
        if not fresh:
            learner.fresh_form = False  # the streaming path, positions carried
        state = learner.init(args.batch)
        learner.learn(state, rows)[1].block_until_ready()  # compile
        key = f"{name}_{'fresh_form' if fresh else 'streaming'}"
        runs[key] = (learner, state)
        print(key, "segment", learner.segment, "fresh form", learner.fresh_form, flush=True)
    plain = nnx.jit(lambda m, x: m(x))
    x = jnp.asarray(rng.integers(0, vocab, (32, t)), jnp.int32)
    plain(model, x).block_until_ready()
    seconds = {k: [] for k in list(runs) + ["plain_eval"]}
    for _ in range(args.rounds):
        for key, (learner, state) in runs.items():
            start = time.perf_counter()
            learner.learn(state, rows)[1].block_until_ready()
            seconds[key].append((time.perf_counter() - start) / (rows.shape[0] * args.window))
        start = time.perf_counter()
        plain(model, x).block_until_ready()
        seconds["plain_eval"].append((time.perf_counter() - start) / x.size)
    tps = {k: 1.0 / float(np.median(v)) for k, v in seconds.items()}
    ratios = {f"{k}_over_plain_eval": tps[k] / tps["plain_eval"] for k in runs}
    result = dict(arch=args.arch, seq_len=t, batch=args.batch, window=args.window,
                  segment=runs["learn_fresh_form"][0].segment, tokens_per_s=tps, ratios=ratios,
                  stop_over_full_gradient=tps["learn_fresh_form"]
                  / tps["learn_full_gradient_fresh_form"],
                  fresh_form_speedup=dict(
                      learn=tps["learn_fresh_form"] / tps["learn_streaming"],
                      stream_eval=tps["stream_eval_fresh_form"] / tps["stream_eval_streaming"]))
    for k, v in sorted(tps.items()):
        print(f"{k:24s} {v:9.0f} tokens/s")
    for k, v in sorted(ratios.items()):
        print(f"{k:40s} {v:.3f}")
    write_results(args.out, args, [result])


def batch_row(model, rng, t: int, batch: int, args) -> dict:
    """Learning over `batch` streams against plain evaluation of [batch, T] windows, alternated."""
    vocab = model.config.vocab_size
    rows = jnp.asarray(rng.integers(0, vocab, (batch, args.window + 1)), jnp.int32)
    learner = Learner(model, [GroupSpec(("cms",), optimizer="adam", lr=1e-3)], seq_len=t,
                      memory_gradient=args.memory_gradient)
    state = learner.init(batch)
    learner.learn(state, rows)[1].block_until_ready()  # compile
    plain = nnx.jit(lambda m, x: m(x))
    x = jnp.asarray(rng.integers(0, vocab, (batch, t)), jnp.int32)
    plain(model, x).block_until_ready()
    learn_s, plain_s = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        learner.learn(state, rows)[1].block_until_ready()
        learn_s.append((time.perf_counter() - start) / (batch * args.window))
        start = time.perf_counter()
        plain(model, x).block_until_ready()
        plain_s.append((time.perf_counter() - start) / x.size)
    learn_tps, plain_tps = 1.0 / float(np.median(learn_s)), 1.0 / float(np.median(plain_s))
    print(f"B {batch:4d}: learn {learn_tps:9.0f} tokens/s, plain eval {plain_tps:9.0f} tokens/s,"
          f" ratio {learn_tps / plain_tps:.3f}", flush=True)
    return dict(arch=args.arch, seq_len=t, batch=batch, window=args.window,
                memory_gradient=args.memory_gradient,
                segment=learner.segment, learn_tokens_per_s=learn_tps,
                plain_eval_tokens_per_s=plain_tps, learn_over_plain_eval=learn_tps / plain_tps)


if __name__ == "__main__":
    main()
