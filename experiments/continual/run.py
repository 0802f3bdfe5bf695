"""Continual learning after deployment (issue 16): a domain stream through trained tiny models.

    python experiments/continual/run.py --hope=RUN --transformer=RUN [--new_tokens=200000]

RUNs are `hope-jax train` workdirs trained on en_pip only; the results were made with
    hope-jax train --workdir=workdirs/cl-hope2k --config.train.steps=2000
    hope-jax train --workdir=workdirs/cl-tpp2k --config.train.steps=2000 \
        --config.model.arch=transformer
    python experiments/continual/run.py --hope=workdirs/cl-hope2k --transformer=workdirs/cl-tpp2k \
        --en_tokens=16384 --new_tokens=65536 --batch=8 --mark=8192 [--lr=3e-4 --out=…/adam3e-4]
Each model reads the stream en_pip (train split) → python_stdlib → japanese as `--batch` parallel
streams, once with its learn groups learning (Hope: the CMS levels at their own chunks;
Transformer++: every MLP, at the chunk of Hope's cms1 unless --transformer_chunk) and once
frozen (learning rate 0: the same reading, no update).
Measured: online bpb along each domain, held-out bpb of every domain after each phase
(forgetting of en_pip), memorisation across documents with and without learning, and learn vs
plain-eval throughput. Writes experiments/continual/results/continual.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from hope_jax import data
from hope_jax.cli_learn import heldout_bpb, stream_rows, window_of
from hope_jax.models.context_state import reset_context
from hope_jax.learn import GroupSpec, Learner
from hope_jax.train import load_for_inference

DOMAINS = ("en_pip", "python_stdlib", "japanese")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def prepared_domain(config, corpus: str):
    cfg = config.data.copy_and_resolve_references()
    cfg.corpus = corpus
    return data.prepare(cfg, progress=False)


CMS_CHUNKS: dict = {}  # --cms_chunk overrides, e.g. {"cms0": 64}
MEMORY_GRADIENT = ["stop"]  # --memory_gradient
# Transformer++'s MLPs step as often as Hope's fastest outer level (cms1: P·T tokens), unless
# --transformer_chunk says otherwise; set when Hope's learner is built (Hope runs first).
TRANSFORMER_CHUNK = [0]


def make_learner(model, config, arch: str, opt: str, lr: float, frozen: bool = False
                 ) -> Learner:
    if arch == "hope":
        groups = [GroupSpec(("cms",), optimizer=opt, lr=lr, chunk=dict(CMS_CHUNKS) or None)]
    else:  # Transformer++: all MLPs (logical axis "mlp"), Hope's cms1 step count
        groups = [GroupSpec(("mlp",), name="mlp", chunk=TRANSFORMER_CHUNK[0], optimizer=opt,
                            lr=lr)]
    learner = Learner(model, groups, seq_len=int(config.data.seq_len), frozen=frozen,
                      memory_gradient=MEMORY_GRADIENT[0])
    if arch == "hope" and not TRANSFORMER_CHUNK[0]:
        TRANSFORMER_CHUNK[0] = min(g.chunk for g in learner.groups if g.params)
        print(f"Transformer++ learns its MLPs every {TRANSFORMER_CHUNK[0]} tokens", flush=True)
    return learner


def heldout_all(learner, params, preps, config, windows, tb) -> dict:
    model = learner.model(params)
    return {d: heldout_bpb(model, preps[d], config, windows, tb) for d in DOMAINS}


def read_domain(learner, state, tokens, batch: int, tb, mark: int) -> tuple:
    """Streams one domain; (state, curve [(tokens, online bpb over the last `mark` tokens)],
    steady-state tokens/s)."""
    W = window_of(learner)
    rows = stream_rows(tokens, batch, W)
    n = (rows.shape[1] - 1) // W
    curve, nats, nbytes, done, busy = [], 0.0, 0.0, 0, 0.0
    for k in range(n):
        chunk = rows[:, k * W:(k + 1) * W + 1]
        t = time.perf_counter()
        state, nll = learner.learn(state, chunk)
        nll = np.asarray(nll)
        busy += (time.perf_counter() - t) if k else 0.0  # the first call compiles
        nats, nbytes = nats + float(nll.sum()), nbytes + float(tb[chunk[:, 1:]].sum())
        done += chunk[:, 1:].size
        if done % mark < chunk[:, 1:].size or k == n - 1:
            curve.append((done, nats / math.log(2) / max(nbytes, 1.0)))
            nats = nbytes = 0.0
    return state, curve, (done - batch * W) / max(busy, 1e-9)


def stream(model, config, arch, lr, opt, preps, budgets, args, tb, frozen=False) -> dict:
    learner = make_learner(model, config, arch, opt, lr, frozen)
    state = learner.init(args.batch)
    out = dict(groups=[(g.name, g.chunk) for g in learner.groups], window=window_of(learner),
               heldout=[dict(after="start", **heldout_all(learner, state.params, preps, config,
                                                          args.heldout_windows, tb))],
               curves={}, tokens_per_s={})
    for d in DOMAINS:
        tokens = np.asarray(preps[d].tokens("train")[:budgets[d] + 1])
        state, curve, tps = read_domain(learner, state, tokens, args.batch, tb, args.mark)
        out["curves"][d], out["tokens_per_s"][d] = curve, tps
        out["heldout"].append(dict(after=d, **heldout_all(learner, state.params, preps, config,
                                                           args.heldout_windows, tb)))
        print(f"  {arch} {'frozen' if frozen else 'learning'} {d}: online bpb "
              f"{curve[0][1]:.3f} → {curve[-1][1]:.3f}, {tps:,.0f} tok/s, "
              f"held-out {out['heldout'][-1]}", flush=True)
    return out


def memorisation(model, config, arch, lr, opt, prep, tb, docs: int = 16) -> dict:
    """16 pseudo-documents (512-token pieces strided over en_pip's held-out split) read in
    order by the learner (B = 1), the context restarted at every document, the memory (and the
    learned parameters) reset per document or carried: frozen off / on, learning reset / on.
    (`eval.memorization_bpb` reads a document with one growing context instead; the learner
    restarts an attention model's context every T tokens as in training, so the four numbers
    here share one reading.)"""
    toks = np.asarray(prep.tokens("valid"))
    starts = np.linspace(0, len(toks) - 514, docs).astype(int)
    pieces = [toks[s:s + 513] for s in starts]
    out = {}
    for frozen in (True, False):
        learner = make_learner(model, config, arch, opt, lr, frozen)
        for carry in (False, True):
            state, nats, nbytes = learner.init(1), 0.0, 0.0
            for p in pieces:
                fresh = learner.fresh_cache(state.params, 1)
                cache = reset_context(state.cache, fresh) if carry else fresh
                state = state._replace(cache=cache)
                state, nll = learner.learn(state, p[None])
                nats, nbytes = nats + float(np.sum(nll)), nbytes + float(tb[p[1:]].sum())
            key = (("on" if carry else "off") if frozen
                   else ("on" if carry else "reset") + "_learning")
            out[key] = nats / math.log(2) / nbytes
    out["gain_frozen"] = out["off"] - out["on"]
    out["gain_reset_learning"] = out["off"] - out["reset_learning"]
    out["gain_learning"] = out["off"] - out["on_learning"]
    return out


def throughput(model, config, arch, opt, lr, tokens, batch: int, T: int, rounds: int = 3
               ) -> dict:
    """Learn, frozen-stream and plain-eval tokens/s measured in alternation (same load)."""
    from flax import nnx
    f = nnx.jit(lambda m, x: m(x))
    x = jnp.asarray(tokens[:32 * T].reshape(32, T))
    runs = {}
    for key, frozen in (("learn", False), ("stream_eval", True)):
        lrn = make_learner(model, config, arch, opt, lr, frozen)
        W = window_of(lrn)
        rows = stream_rows(tokens, batch, W)[:, :W + 1]
        runs[key] = (lrn, lrn.init(batch), rows)
        lrn.learn(runs[key][1], rows)[1].block_until_ready()
    f(model, x).block_until_ready()
    took = dict(learn=0.0, stream_eval=0.0, plain_eval=0.0)
    for _ in range(rounds):
        for key, (lrn, st, rows) in runs.items():
            t = time.perf_counter()
            lrn.learn(st, rows)[1].block_until_ready()
            took[key] += (time.perf_counter() - t) / rows[:, 1:].size
        t = time.perf_counter()
        f(model, x).block_until_ready()
        took["plain_eval"] += (time.perf_counter() - t) / x.size
    tps = {k: rounds / v for k, v in took.items()}
    tps["ratio_learn_over_plain_eval"] = tps["learn"] / tps["plain_eval"]
    tps["ratio_learn_over_stream_eval"] = tps["learn"] / tps["stream_eval"]
    tps["batch"] = batch
    return tps




def summarise(res: dict) -> dict:
    """The issue's targets from the raw results."""
    s = {}
    for arch, r in res["models"].items():
        learn, frozen = r["learning"], r["frozen"]
        h = {row["after"]: row for row in learn["heldout"]}
        s[arch] = dict(
            online_drop={d: learn["curves"][d][0][1] - learn["curves"][d][-1][1]
                         for d in DOMAINS[1:]},
            online_drop_frozen={d: frozen["curves"][d][0][1] - frozen["curves"][d][-1][1]
                                for d in DOMAINS[1:]},
            online_gain_vs_frozen_last={d: frozen["curves"][d][-1][1] - learn["curves"][d][-1][1]
                                        for d in DOMAINS[1:]},
            heldout_gain={d: h[DOMAINS[i]][d] - h[d][d] for i, d in enumerate(DOMAINS[1:])},
            forgetting_en=h["japanese"]["en_pip"] - h["en_pip"]["en_pip"],
            forgetting_en_vs_start=h["japanese"]["en_pip"] - h["start"]["en_pip"],
            memorisation=r["memorisation"],
            stream_learn_tokens_per_s=learn["tokens_per_s"],
            throughput=r["throughput"])
    if {"hope", "transformer"} <= set(s) and s["transformer"]["forgetting_en"] > 0:
        s["forgetting_ratio_hope_over_transformer"] = (s["hope"]["forgetting_en"]
                                                       / s["transformer"]["forgetting_en"])
    return s


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arch, r in res["models"].items():
        for mode, style in (("learning", "-"), ("frozen", ":")):
            x0, xs, ys = 0, [], []
            for d in DOMAINS:
                curve = r[mode]["curves"][d]
                xs += [x0 + t for t, _ in curve]
                ys += [b for _, b in curve]
                x0 += curve[-1][0]
            axes[0].plot(xs, ys, style, label=f"{arch} {mode}")
        rows = r["learning"]["heldout"]
        axes[1].plot([row["after"] for row in rows], [row["en_pip"] for row in rows], "o-",
                     label=f"{arch} (learning)")
        m = r["memorisation"]
        axes[2].bar([f"{arch[:4]}\nreset", f"{arch[:4]}\ncarried", f"{arch[:4]}\nreset\n+learn",
                     f"{arch[:4]}\ncarried\n+learn"],
                    [m["off"], m["on"], m["reset_learning"], m["on_learning"]])
    axes[0].set(xlabel="tokens streamed (en_pip → python_stdlib → japanese)",
                ylabel="online bpb", title="stream")
    axes[1].set(xlabel="after phase", ylabel="held-out en_pip bpb", title="forgetting")
    axes[2].set(ylabel="bpb (en_pip held-out pieces)", title="memorisation across documents")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hope", required=True)
    ap.add_argument("--transformer", required=True)
    ap.add_argument("--en_tokens", type=int, default=65536)
    ap.add_argument("--new_tokens", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--mark", type=int, default=16384)
    ap.add_argument("--heldout_windows", type=int, default=32)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--throughput_batches", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--cms_chunk", default="", help="Hope chunk overrides, e.g. cms0=64")
    ap.add_argument("--transformer_chunk", type=int, default=0,
                    help="Transformer++'s learn chunk (0: Hope's cms1 chunk, P·T)")
    ap.add_argument("--memory_gradient", default="stop", choices=("stop", "full"),
                    help="the learn gradient through the mixers' memory writes")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/hope_jax/jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    for part in filter(None, args.cms_chunk.split(",")):
        name, value = part.split("=")
        CMS_CHUNKS[name] = int(value)
    MEMORY_GRADIENT[0] = args.memory_gradient
    TRANSFORMER_CHUNK[0] = args.transformer_chunk
    budgets = dict(en_pip=args.en_tokens, python_stdlib=args.new_tokens,
                   japanese=args.new_tokens)
    res = dict(settings=vars(args), budgets=budgets, models={})
    t0 = time.perf_counter()
    for arch, workdir in (("hope", args.hope), ("transformer", args.transformer)):
        model, tok, config = load_for_inference(workdir)
        tb = np.asarray(tok.token_bytes())
        preps = {d: prepared_domain(config, d) for d in DOMAINS}
        r = {}
        for mode in ("learning", "frozen"):
            r[mode] = stream(model, config, arch, args.lr, args.optimizer, preps, budgets, args,
                             tb, frozen=mode == "frozen")
        r["memorisation"] = memorisation(model, config, arch, args.lr, args.optimizer,
                                         preps["en_pip"], tb)
        py = np.asarray(preps["python_stdlib"].tokens("train")[:200000])
        r["throughput"] = {str(b): throughput(model, config, arch, args.optimizer, args.lr, py,
                                              b, int(config.data.seq_len))
                           for b in args.throughput_batches}
        res["models"][arch] = r
        print(f"{arch}: memorisation {r['memorisation']}, throughput {r['throughput']}",
              flush=True)
    res["summary"] = summarise(res)
    res["wall_s"] = time.perf_counter() - t0
    res["device"] = f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores (shared)"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "continual.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    plot(res, os.path.join(args.out, "continual.png"))
    print(json.dumps(res["summary"], indent=1, default=float))


if __name__ == "__main__":
    main()
