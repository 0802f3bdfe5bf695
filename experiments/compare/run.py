"""Comparison runner: train several architectures on equal tokens, evaluate them the same way,
write a markdown report with PNGs and results.json.

    python experiments/compare/run.py --comparison=tiny            # ≈ 20–25 min on 2 CPU cores
    python experiments/compare/run.py --comparison=smoke --root=/tmp/cmp --report=/tmp/cmp/report

For every model of the comparison (experiments/compare/tiny.py), in `<root>/<model>/`:

  train        hope_jax.train.train on `train.corpus` (steps × global_batch × seq_len tokens, the
               same for every model) in `<root>/<model>/train`; final train loss = mean of the
               last 20 steps' losses; tokens/s = median of the trainer's logged windows (compile
               step excluded); non-finite (skipped) steps counted from metrics.jsonl
  bpb          hope_jax.eval.bits_per_byte on the held-out split (eval.batch_size ×
               eval.eval_batches windows of seq_len) with the checkpoint read back
  niah         hope_jax.eval.niah_grid, passkey task, lengths × depths
  memorization hope_jax.eval.memorization_bpb on the first held-out documents, chunk = seq_len;
               gain = bpb(memory reset per document) − bpb(memory carried)
  mqar         hope_jax.eval.train_mqar: a fresh model of the same shape on MQAR
  continual    hope_jax.eval.continual_learning over the phases (in-process mode: one model and
               AdamW state through every phase; comparison key continual.mode = "trainer" uses
               train(init_from=...) per phase instead); forgetting per domain

Each finished stage is stored in `<root>/<model>/stages.json` and skipped when the runner is
started again (so an interrupted comparison resumes; delete the file or the folder to redo a
model). The report (`<report>/report.md`, `results.json`, PNGs) is rewritten from all stored
stages at the end of every run; it names the command and the git commit.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, REPO)

STAGES = ("train", "bpb", "niah", "memorization", "mqar", "continual")


# ------------------------------------------------------------------ helpers
def load_comparison(name: str) -> dict:
    """The comparison dict from experiments/compare/tiny.py (name: tiny | tiny2k | smoke | a path
    `file.py:name`)."""
    path, key = os.path.join(HERE, "tiny.py"), name
    if ":" in name and name.split(":", 1)[0].endswith(".py"):
        path, key = name.split(":", 1)
    spec = importlib.util.spec_from_file_location("_comparison", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_comparison(key)


def clean_json(x: Any) -> Any:
    """NaN / inf → None, numpy → python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return clean_json(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "hope_jax"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return sha + (" (hope_jax/ has uncommitted changes)" if dirty else "")
    except Exception:
        return "unknown"


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def make_config(model: dict, comp: dict):
    """experiment_config(arch, size) with the comparison's training settings and the model's
    overrides ("group.key": value)."""
    from hope_jax.config.experiments import experiment_config
    t = comp["train"]
    c = experiment_config(model["arch"], model["size"])
    c.data.corpus, c.data.seq_len = t["corpus"], int(t["seq_len"])
    c.train.steps, c.train.global_batch = int(t["steps"]), int(t["global_batch"])
    c.optim.lr, c.optim.warmup_steps = float(t["lr"]), int(t["warmup_steps"])
    c.train.log_every = int(t.get("log_every", 10))
    c.train.eval_every, c.train.checkpoint_every = 0, max(1, int(t["steps"]) // 4)
    c.train.keep_checkpoints, c.train.progress = 2, False
    c.train.max_bad_steps = int(t.get("max_bad_steps", 50))
    for key, value in model.get("overrides", {}).items():
        group, _, k = key.partition(".")
        c[group][k] = value
    return c


def param_count(config, vocab_size: int) -> int:
    from hope_jax.config.build import decoder_config
    from hope_jax.models.param_count import abstract_model, count_params
    return count_params(abstract_model(decoder_config(config, vocab_size)))


def held_out_documents(prepared, split: str, limit: int) -> list[np.ndarray]:
    """The first `limit` documents of a split as token arrays (the shard's offsets)."""
    with open(os.path.join(prepared.root, f"{split}.json")) as f:
        offsets = json.load(f)["offsets"]
    tokens = prepared.tokens(split)
    ends = list(offsets[1:]) + [len(tokens)]
    return [np.asarray(tokens[a:b]) for a, b in list(zip(offsets, ends))[:limit]]


def read_metrics(path: str) -> dict:
    steps, losses, tps = [], [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if "loss" in r:
                steps.append(int(r["step"]))
                losses.append(float(r["loss"]))
            if r.get("tokens_per_s"):
                tps.append(float(r["tokens_per_s"]))
    return dict(steps=steps, losses=losses, tokens_per_s=tps)


# ------------------------------------------------------------------ stages
def stage_train(model: dict, comp: dict, mdir: str) -> dict:
    from hope_jax import data
    from hope_jax.train import train
    c = make_config(model, comp)
    workdir = os.path.join(mdir, "train")
    from hope_jax.train.loop import NonFiniteTrainingError
    t0 = time.perf_counter()
    try:
        res = train(c, workdir)
    except NonFiniteTrainingError as e:  # evaluate the last finite checkpoint, say so
        print(f"[{model['name']}] training stopped: {e}", flush=True)
        res = dict(step=-1, stopped="diverged", tokens_per_s=float("nan"), bpb=float("nan"))
    wall = time.perf_counter() - t0
    m = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    # A resumed run appends to metrics.jsonl: keep the last record of each step.
    last = dict(zip(m["steps"], m["losses"]))
    steps = sorted(last)
    losses = [last[s] for s in steps]
    finite = [x for x in losses if math.isfinite(x)]
    vocab = int(data.prepare(c.data, progress=False).tokenizer.vocab_size)
    t = comp["train"]
    return dict(arch=model["arch"], size=model["size"], overrides=model.get("overrides", {}),
                params=param_count(c, vocab),
                tokens=int(t["steps"]) * int(t["global_batch"]) * int(t["seq_len"]),
                steps=int(res["step"]) if res["step"] >= 0 else (steps[-1] if steps else 0),
                stopped=res["stopped"], wall_s=wall,
                tokens_per_s=float(np.median(m["tokens_per_s"])) if m["tokens_per_s"] else
                float(res["tokens_per_s"]),
                final_loss=float(np.mean(finite[-20:])) if finite else float("nan"),
                skipped_steps=int(sum(not math.isfinite(x) for x in losses)),
                train_eval_bpb=float(res["bpb"]), loss_curve=dict(steps=steps, losses=losses))


def _load(mdir: str):
    from hope_jax.train import load_for_inference
    return load_for_inference(os.path.join(mdir, "train"))


def stage_bpb(model: dict, comp: dict, mdir: str) -> dict:
    """Held-out bpb on windows of T, and the write ablation (issue: the memories must learn in
    context): bpb with every in-context write off − on, on the same windows of T and of 4× T
    (> 0: the writes help; 0 for a model without writes)."""
    from hope_jax import data
    from hope_jax.eval import bits_per_byte
    from hope_jax.layers.memory_writes import memory_writes
    net, tok, config = _load(mdir)
    prepared = data.prepare(config.data, progress=False)
    e, t = comp["eval"], int(config.data.seq_len)
    token_bytes = np.asarray(tok.token_bytes())

    def score(length: int, writes: bool, per_window: bool = False) -> dict:
        batches = data.eval_batches(prepared, "valid", seq_len=length,
                                    batch_size=int(e["batch_size"]),
                                    max_batches=int(e["eval_batches"]))
        with memory_writes(net, writes):
            return bits_per_byte(net, batches, token_bytes, per_window=per_window)

    # bpb_ci95 is a pair; window_nats / window_bytes (the windows of T) are kept for differences
    # between models paired over the same windows
    out = {k: float(v) if np.ndim(v) == 0 else [float(x) for x in v]
           for k, v in score(t, True, per_window=True).items()}
    for mult in (1, 4):
        on = out["bpb"] if mult == 1 else float(score(mult * t, True)["bpb"])
        with memory_writes(net, False) as n_writing:   # nothing to switch off: off = on
            off = float(score(mult * t, False)["bpb"]) if n_writing else on
        out[f"bpb_{mult}x"], out[f"bpb_writes_off_{mult}x"] = on, off
        out[f"write_ablation_{mult}x"] = off - on
    return out


def paired_difference(a: dict, b: dict) -> tuple[float, float] | None:
    """bpb(a) − bpb(b) and its standard error, paired over the held-out windows both models
    scored (their bpb stages' `window_nats`); None when either lacks them or the windows differ.
    The paired error is much smaller than either model's own: both read the same text."""
    from hope_jax.data.bpb import paired_difference_se
    if not (a and b and a.get("window_nats") and b.get("window_nats")):
        return None
    if a["window_bytes"] != b["window_bytes"]:
        return None
    a_nats, b_nats, nbytes = (np.asarray(x, np.float64) for x in
                              (a["window_nats"], b["window_nats"], a["window_bytes"]))
    diff = (a_nats.sum() - b_nats.sum()) / nbytes.sum() / math.log(2)
    return float(diff), paired_difference_se(a_nats, nbytes, b_nats, nbytes)


def stage_niah(model: dict, comp: dict, mdir: str) -> dict:
    from hope_jax.eval import niah_grid
    net, tok, _ = _load(mdir)
    n = comp["niah"]
    acc = niah_grid(net, tok, n["lengths"], n["depths"], task="passkey",
                    n_samples=int(n["n_samples"]), seed=0, instruction=bool(n["instruction"]))
    acc = np.asarray(acc)
    return dict(lengths=list(n["lengths"]), depths=list(n["depths"]), accuracy=acc.tolist(),
                mean=float(acc.mean()))


def stage_memorization(model: dict, comp: dict, mdir: str) -> dict:
    from hope_jax import data
    from hope_jax.eval import memorization_bpb
    net, tok, config = _load(mdir)
    prepared = data.prepare(config.data, progress=False)
    m = comp["memorization"]
    docs = held_out_documents(prepared, "valid", int(m["documents"]))
    r = memorization_bpb(net, docs, np.asarray(tok.token_bytes()),
                         chunk_len=int(config.data.seq_len), max_chunks=int(m["max_chunks"]))
    return dict(off_bpb=float(r["off"]["bpb"]), on_bpb=float(r["on"]["bpb"]),
                gain=float(r["gain"]), gain_se=float(r["gain_se"]), documents=int(r["documents"]))


def stage_mqar(model: dict, comp: dict, mdir: str) -> dict:
    from hope_jax.config.build import decoder_config
    from hope_jax.eval import train_mqar
    q = comp["mqar"]
    c = make_config(model, comp)
    c.data.seq_len = int(q["seq_len"])
    _, r = train_mqar(decoder_config(c, int(q["vocab_size"])), steps=int(q["steps"]),
                      batch_size=int(q["batch_size"]), seq_len=int(q["seq_len"]),
                      num_kv_pairs=int(q["num_kv_pairs"]), lr=float(q["lr"]), seed=0)
    losses = [float(x) for x in r["losses"]]
    tail = [x for x in losses[-20:] if math.isfinite(x)]
    return dict(accuracy=float(r["accuracy"]), final_loss=float(np.mean(tail)) if tail else
                float("nan"), chance=1.0 / (int(q["vocab_size"]) // 2))


def stage_continual(model: dict, comp: dict, mdir: str) -> dict:
    from hope_jax.eval import continual as cont
    k = comp["continual"]
    c = make_config(model, comp)
    # The in-process mode (one model and one AdamW state carried through the phases, constant
    # LR after warm-up; docs/evaluation.md) by default: one compile instead of a trainer build,
    # checkpoint and read-back per phase. --continual_mode=trainer uses train(init_from=...).
    original = cont._init_kwarg
    if k.get("mode", "in_process") == "in_process":
        cont._init_kwarg = lambda fn: None
    try:
        r = cont.continual_learning(c, os.path.join(mdir, "continual"), phases=tuple(k["phases"]),
                                    steps_per_phase=int(k["steps_per_phase"]),
                                    eval_batches=int(k["eval_batches"]))
    finally:
        cont._init_kwarg = original
    return dict(mode=k.get("mode", "in_process"), domains=list(r["domains"]),
                bpb=np.asarray(r["bpb"]).tolist(),
                forgetting=np.asarray(r["forgetting"]).tolist(),
                mean_forgetting=float(np.mean(np.asarray(r["forgetting"])[:-1]))
                if len(r["domains"]) > 1 else 0.0)


STAGE_FNS = dict(train=stage_train, bpb=stage_bpb, niah=stage_niah,
                 memorization=stage_memorization, mqar=stage_mqar, continual=stage_continual)


def run_model(model: dict, comp: dict, root: str, stages=STAGES, log=print) -> dict:
    """Runs the stages of one model not yet stored in `<root>/<name>/stages.json`."""
    mdir = os.path.join(root, model["name"])
    os.makedirs(mdir, exist_ok=True)
    path = os.path.join(mdir, "stages.json")
    done: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            done = json.load(f)
    for stage in stages:
        if stage in done:
            log(f"[{model['name']}] {stage}: done before, skipped")
            continue
        if stage != "train" and "train" not in done:
            raise RuntimeError(f"{model['name']}: stage {stage} needs the train stage")
        t0 = time.perf_counter()
        out = STAGE_FNS[stage](model, comp, mdir)
        out["stage_wall_s"] = time.perf_counter() - t0
        out["git_commit"] = git_commit()   # the code this stage ran (the tree may move on)
        done[stage] = clean_json(out)
        if os.path.exists(path):   # stages stored meanwhile by another process (--stages split)
            with open(path) as f:
                done = {**json.load(f), **done}
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(done, f, indent=1)
        os.replace(tmp, path)
        log(f"[{model['name']}] {stage}: {out['stage_wall_s']:.0f} s  " + ", ".join(
            f"{k}={v:.4g}" for k, v in out.items()
            if isinstance(v, float) and k != "stage_wall_s"))
    return done


# ------------------------------------------------------------------ report
def _cell(x, digits=3) -> str:
    if x is None:
        return "nan"
    if isinstance(x, float):
        return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


DASH = "—"  # a cell of a stage that has not run


class _Results:
    """The per-model results of a comparison, as the report's sections read them."""

    def __init__(self, results: dict, out_dir: str):
        self.models: dict = results["models"]
        self.comp = results.get("comparison", {})
        self.names = list(self.models)
        self.out_dir = out_dir

    def get(self, name, stage, key, default=None):
        return (self.models[name].get(stage) or {}).get(key, default)

    def cell(self, name, stage, key, digits=3):
        """The `key` of a model's stage as a table cell ("—" when the stage has not run)."""
        return _cell(self.get(name, stage, key), digits) if self.models[name].get(stage) else DASH


def _header_section(results: dict, comp: dict) -> list[str]:
    lines = [f"# Comparison: {results.get('name', '')}", ""]
    lines += ["Produced by:", "", "```", results.get("command", ""), "```", "",
              f"git commit (when the report was written): "
              f"`{results.get('git_commit', 'unknown')}`  ",
              f"host: {results.get('host', '')}  ",
              f"finished: {results.get('finished', '')}  ",
              f"total wall time of the stages: {results.get('wall_s', float('nan')) / 60:.1f} min",
              ""]
    for note in results.get("notes", []):
        lines += [f"> {note}", ""]
    t = comp.get("train", {})
    if t:
        tokens = int(t.get('steps', 0)) * int(t.get('global_batch', 0)) * int(t.get('seq_len', 0))
        lines += [f"Training: corpus `{t.get('corpus')}`, byte tokenizer, {t.get('steps')} steps × "
                  f"batch {t.get('global_batch')} × T = {t.get('seq_len')} "
                  f"(= {tokens:,} tokens per model), AdamW lr {t.get('lr')}, "
                  f"warm-up {t.get('warmup_steps')}, cosine.", ""]
    return lines


def _training_section(r: _Results) -> list[str]:
    """1. training, parameters and held-out bpb (and the loss curves' PNG)."""
    from hope_jax.eval.report import markdown_table, plot_loss_curves
    rows = []
    ref = r.names[0]
    params = [r.get(n, "train", "params") for n in r.names]
    pmax = max([p for p in params if p] or [1])
    for n in r.names:
        p = r.get(n, "train", "params")
        ov = r.get(n, "train", "overrides") or {}
        rows.append({
            "model": n, "arch": r.get(n, "train", "arch", DASH),
            "overrides": ", ".join(f"{k}={v}" for k, v in ov.items()) or DASH,
            "params": f"{p:,}" if p else DASH,
            "params / max": _cell(p / pmax, 2) if p else DASH,
            "tokens": f"{r.get(n, 'train', 'tokens'):,}" if r.get(n, "train", "tokens") else DASH,
            "tokens/s": r.cell(n, "train", "tokens_per_s", 0),
            "train wall (s)": r.cell(n, "train", "wall_s", 0),
            "skipped steps": r.get(n, "train", "skipped_steps", DASH),
            "final train loss": r.cell(n, "train", "final_loss"),
            "held-out bpb": r.cell(n, "bpb", "bpb"),
            "write ablation (T / 4T)": (f"{r.cell(n, 'bpb', 'write_ablation_1x')} / "
                                        f"{r.cell(n, 'bpb', 'write_ablation_4x')}"),
            f"bpb − {ref}'s (paired SE)": _paired_cell(r, n, ref),
        })
    lines = ["## Training and held-out bits per byte", "",
             "final train loss: mean of the last 20 steps (nats/token). held-out bpb: "
             f"{r.comp.get('eval', {}).get('batch_size', '?')} × "
             f"{r.comp.get('eval', {}).get('eval_batches', '?')} windows of the held-out split "
             "(lower is better). skipped steps: non-finite steps the trainer skipped. write "
             "ablation: held-out bpb with every in-context memory write off − with them on, on "
             "the same windows of T and of 4× T (> 0: the writes help; 0 for attention). "
             f"bpb − {ref}'s: the held-out difference to the first model, with its standard "
             "error paired over the same windows (< 0: better than it).", "",
             markdown_table(rows)]
    curves = {n: (r.models[n]["train"]["loss_curve"]["steps"],
                  r.models[n]["train"]["loss_curve"]["losses"])
              for n in r.names if r.models[n].get("train", {}).get("loss_curve")}
    if curves:
        plot_loss_curves(curves, os.path.join(r.out_dir, "loss_curves.png"),
                         ylabel="train loss (nats/token)", title="training loss")
        lines += ["", "![loss curves](loss_curves.png)", ""]
    return lines


def _paired_cell(r: _Results, name: str, ref: str) -> str:
    if name == ref:
        return DASH
    d = paired_difference(r.models[name].get("bpb"), r.models[ref].get("bpb"))
    return DASH if d is None else f"{d[0]:+.4f} ({d[1]:.4f})"


def _niah_section(r: _Results) -> list[str]:
    """2. NIAH accuracy per length (and one heatmap PNG per model)."""
    from hope_jax.eval.report import markdown_table, plot_niah_heatmap
    niah = {n: r.models[n]["niah"] for n in r.names if r.models[n].get("niah")}
    if not niah:
        return []
    first = next(iter(niah.values()))
    rows = []
    for n, res in niah.items():
        acc = np.asarray([[_num(x) for x in row] for row in res["accuracy"]])
        row = {"model": n}
        for i, L in enumerate(res["lengths"]):
            row[f"L={L}"] = _cell(float(acc[i].mean()), 2)
        row["mean"] = _cell(float(acc.mean()), 2)
        rows.append(row)
        plot_niah_heatmap(acc, res["lengths"], res["depths"],
                          os.path.join(r.out_dir, f"niah_{n}.png"), title=f"NIAH passkey: {n}")
    return ["## Needle in a haystack (passkey, S-NIAH-1)", "",
            f"Accuracy averaged over depths {first['depths']} "
            f"({r.comp.get('niah', {}).get('n_samples', '?')} prompts per cell, greedy, exact "
            "5-digit match; chance ≈ 0).", "", markdown_table(rows), "",
            " ".join(f"![{n}](niah_{n}.png)" for n in niah), ""]


def _se(x) -> str:
    """" (0.0012)": a standard error after its value, or nothing for results stored without one."""
    return f" ({x:.4f})" if isinstance(x, float) and math.isfinite(x) else ""


def _memory_section(r: _Results) -> list[str]:
    """3. test-time memorisation and MQAR."""
    from hope_jax.eval.report import markdown_table
    rows = []
    for n in r.names:
        mem, mq = r.models[n].get("memorization"), r.models[n].get("mqar")
        if not (mem or mq):
            continue
        rows.append({"model": n,
                     "bpb memory reset": _cell(mem.get("off_bpb")) if mem else DASH,
                     "bpb memory carried": _cell(mem.get("on_bpb")) if mem else DASH,
                     "memorisation gain (SE)": (f"{_cell(mem.get('gain'), 4)}"
                                                f"{_se(mem.get('gain_se'))}") if mem else DASH,
                     "MQAR accuracy": _cell(mq.get("accuracy")) if mq else DASH,
                     "MQAR final loss": _cell(mq.get("final_loss")) if mq else DASH})
    if not rows:
        return []
    m, q = r.comp.get("memorization", {}), r.comp.get("mqar", {})
    return ["## Test-time memorisation and MQAR", "",
            f"Memorisation: the first {m.get('documents', '?')} held-out documents read in "
            f"chunks of T (at most {m.get('max_chunks', '?')} per document); gain = bpb with "
            "the memory reset at each document − bpb with it carried over (> 0: carrying "
            "helped; exactly 0 for attention, whose only state is context); its standard "
            "error is paired over the documents. "
            f"MQAR: a fresh model of the same shape, {q.get('steps', '?')} steps × batch "
            f"{q.get('batch_size', '?')}, T = {q.get('seq_len', '?')}, "
            f"{q.get('num_kv_pairs', '?')} key-value pairs, vocabulary "
            f"{q.get('vocab_size', '?')} (chance "
            f"{_cell(1 / max(1, int(q.get('vocab_size', 2)) // 2), 3)}).", "",
            markdown_table(rows), ""]


def _continual_section(r: _Results) -> list[str]:
    """4. continual learning: bpb per domain after its phase and at the end, forgetting."""
    from hope_jax.eval.report import markdown_table, plot_forgetting
    cont = {n: r.models[n]["continual"] for n in r.names if r.models[n].get("continual")}
    if not cont:
        return []
    domains = next(iter(cont.values()))["domains"]
    rows = []
    for n, res in cont.items():
        bpb = np.asarray([[_num(x) for x in row] for row in res["bpb"]])
        row = {"model": n}
        for d, dom in enumerate(domains):
            row[f"bpb {dom} after own phase"] = _cell(float(bpb[d, d]))
            row[f"bpb {dom} at end"] = _cell(float(bpb[-1, d]))
        for d, dom in enumerate(domains[:-1]):
            row[f"forgetting {dom}"] = _cell(_num(res["forgetting"][d]), 4)
        rows.append(row)
    plot_forgetting({n: [_num(x) for x in res["forgetting"]] for n, res in cont.items()},
                    domains, os.path.join(r.out_dir, "forgetting.png"))
    return ["## Continual learning", "",
            f"Phases {' → '.join(domains)}, "
            f"{r.comp.get('continual', {}).get('steps_per_phase', '?')} steps each (one "
            "model and AdamW state carried through, constant LR after warm-up). Forgetting "
            "= bpb on a domain at the end − bpb just after its own phase (> 0: forgotten).",
            "",
            markdown_table(rows), "", "![forgetting](forgetting.png)", ""]


def _stages_section(r: _Results) -> list[str]:
    """The commits the stages ran at and each stage's wall time."""
    from hope_jax.eval.report import markdown_table
    lines = []
    stage_commits = sorted({(r.models[n].get(s) or {}).get("git_commit") for n in r.names
                            for s in STAGES if (r.models[n].get(s) or {}).get("git_commit")})
    if stage_commits:
        lines += ["Commits the stages ran at: " + ", ".join(f"`{c}`" for c in stage_commits), ""]
    rows = [{"model": n, **{s: r.cell(n, s, "stage_wall_s", 0) for s in STAGES}}
            for n in r.names]
    return lines + ["## Stage wall times (s)", "", markdown_table(rows)]


def write_report(results: dict, out_dir: str) -> str:
    """report.md + results.json + PNGs from a results dict (see `collect`). Returns the report's
    path. Works with any subset of stages per model (missing cells read "—")."""
    os.makedirs(out_dir, exist_ok=True)
    r = _Results(results, out_dir)
    lines = (_header_section(results, r.comp) + _training_section(r) + _niah_section(r)
             + _memory_section(r) + _continual_section(r) + _stages_section(r))
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(clean_json(results), f, indent=1, allow_nan=False)
    return path


def collect(name: str, comp: dict, root: str, command: str, notes=()) -> dict:
    models = {}
    wall = 0.0
    for m in comp["models"]:
        p = os.path.join(root, m["name"], "stages.json")
        stages = {}
        if os.path.exists(p):
            with open(p) as f:
                stages = json.load(f)
        models[m["name"]] = stages
        wall += sum((s or {}).get("stage_wall_s") or 0.0 for s in stages.values())
    return dict(name=name, command=command, git_commit=git_commit(),
                host=f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
                finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"), wall_s=wall,
                comparison=comp, notes=list(notes), models=models)


def with_seed(comp: dict, seed: int) -> dict:
    """The comparison with every model trained from another seed: its initial parameters
    (train.seed) and the order of its batches (data.shuffle_seed). The evaluations keep theirs,
    so the held-out windows stay the same and the seeds' results pair window by window."""
    comp = copy.deepcopy(comp)
    for m in comp["models"]:
        m["overrides"] = {**m.get("overrides", {}), "train.seed": seed, "data.shuffle_seed": seed}
    return comp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comparison", default="tiny",
                    help="tiny | tiny2k | smoke (experiments/compare/tiny.py)")
    ap.add_argument("--root", default=None, help="workdirs (default workdirs/compare/<name>)")
    ap.add_argument("--report", default=None,
                    help="report folder (default experiments/reports/<name>)")
    ap.add_argument("--models", default="", help="comma list: run only these models (the report "
                    "still covers every model with results)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma list of stages to run")
    ap.add_argument("--note", action="append", default=[], help="a line quoted in the report")
    ap.add_argument("--seed", type=int, default=0,
                    help="another training seed for every model (train.seed: the initial "
                    "parameters; data.shuffle_seed: the batches). A non-zero seed runs as the "
                    "comparison <name>_seed<N>, with its own workdirs and report")
    args = ap.parse_args(argv)
    comp = load_comparison(args.comparison)
    name = args.comparison
    if args.seed:
        comp = with_seed(comp, args.seed)
        name = f"{name}_seed{args.seed}"
    root = os.path.abspath(args.root or os.path.join(REPO, "workdirs", "compare", name))
    report = os.path.abspath(args.report or os.path.join(REPO, "experiments", "reports", name))
    to_run = comp["models"]
    if args.models:
        keep = set(args.models.split(","))
        unknown = sorted(keep - {m["name"] for m in comp["models"]})
        if unknown:
            ap.error(f"unknown models {unknown}; expected some of "
                     f"{[m['name'] for m in comp['models']]}")
        to_run = [m for m in comp["models"] if m["name"] in keep]
    stages = [s for s in args.stages.split(",") if s]
    bad = sorted(set(stages) - set(STAGES))
    if bad:
        ap.error(f"unknown stages {bad}; expected some of {STAGES}")
    command = " ".join(shlex.quote(a) for a in ["python", "experiments/compare/run.py",
                                                 *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    for m in to_run:
        run_model(m, comp, root, stages=[s for s in STAGES if s in stages],
                  log=lambda s: print(s, flush=True))
    # the report covers every model of the comparison that has results, not only those re-run
    results = collect(name, comp, root, command, args.note)
    path = write_report(results, report)
    print(f"report: {path}  ({(time.perf_counter() - t0) / 60:.1f} min this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
