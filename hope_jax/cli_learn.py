"""`hope-jax learn` and `--learn` on `eval` / `generate`: continual learning after deployment.

    hope-jax learn --workdir=RUN --data=FILE[,DIR…] --out=NEWRUN [--learn_groups=cms] [--learn_lr=…]

streams the files through the trained model of RUN; its learn groups (default: every CMS level at
its own chunk) take an optimizer step on the next-token loss of each of their chunks
(`hope_jax.learn`, docs/continual.md). NEWRUN receives checkpoints like a trained run's (generate,
eval and train.init_from read them; the same command resumes from them), `learn/curve.json` and
`learn/curve.png` (online bpb of the stream and held-out bpb along it).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import flags

from hope_jax.cli_base import (COMMANDS, PROG, Command, UsageError, enable_compilation_cache,
                               no_positional, register, sampling_settings, trained_workdir)

LEARN_FLAGS = ("learn_groups", "learn_chunk", "learn_optimizer", "learn_lr", "learn_batch",
               "learn_memory_gradient")
COMMAND_FLAGS = ("workdir", "data", "out", "heldout_every", "heldout_windows",
                 "learn_max_tokens", "save_every") + LEARN_FLAGS


def define_flags(fv: flags.FlagValues) -> None:
    """The flags of `learn` and of `--learn` on eval / generate."""
    s, i, f = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float
    flags.DEFINE_list("data", [], "learn: text files or directories to stream (generate "
                      "--learn: learned from before the prompt).", flag_values=fv)
    s("out", None, "learn: the new run directory for the learned checkpoints and curve.",
      flag_values=fv)
    flags.DEFINE_bool("learn", False, "Keep learning from the next-token loss while reading "
                      "(eval: online held-out bpb with and without; generate: learn from "
                      "--data and the prompt first).", flag_values=fv)
    s("learn_groups", "cms", "Learn groups: cms | cms<i> | a logical axis name (mlp, heads, …) "
      "| a glob or re:REGEX of parameter names; ',' separates groups, NAME=A|B names a union.",
      flag_values=fv)
    s("learn_chunk", "", "Chunk sizes in tokens: N (every group) or NAME=N,… (default: each "
      "group's own chunk; must be a multiple of it).", flag_values=fv)
    s("learn_optimizer", "adam", "gd | momentum | adam | adamw | m3 | muon, for every group, or "
      "NAME=OPT,…,OPT per group.", flag_values=fv)
    f("learn_lr", 3e-4, "Learning rate of the learn groups.", flag_values=fv)
    flags.DEFINE_enum("learn_memory_gradient", "stop", ["stop", "full"], "The learn gradient "
                      "through the mixers' memory writes: stop (constants; the faster default) "
                      "or full (as in training); docs/continual.md.", flag_values=fv)
    i("learn_batch", 4, "Parallel streams (the data is cut into this many contiguous parts).",
      flag_values=fv)
    i("learn_max_tokens", 0, "Stop after this many tokens (0 = all; eval --learn: 65536).",
      flag_values=fv)
    i("heldout_every", 0, "learn: held-out bpb every this many streamed tokens (0 = 8 points).",
      flag_values=fv)
    i("heldout_windows", 32, "learn: held-out windows of T tokens per point.", flag_values=fv)
    i("save_every", 0, "learn: checkpoint every this many streamed tokens (0 = at the end).",
      flag_values=fv)


def make_learner(model, config, fv: flags.FlagValues):
    """The Learner of the --learn_* flags for a loaded model (LearnConfigError on bad groups)."""
    from hope_jax.learn import Learner, parse_groups
    if fv.learn_lr < 0 or fv.learn_batch < 1:
        raise UsageError("--learn_lr must be ≥ 0 and --learn_batch ≥ 1")
    specs = parse_groups(fv.learn_groups, fv.learn_chunk, fv.learn_optimizer, fv.learn_lr)
    if not specs:
        raise UsageError("--learn_groups is empty")
    return Learner(model, specs, seq_len=int(config.data.seq_len),
                   memory_gradient=fv.learn_memory_gradient)


def read_files(paths: Sequence[str], tok) -> np.ndarray:
    """Token ids of the files (directories: their files, sorted; binary files skipped),
    concatenated in order."""
    files = []
    for path in paths:
        path = os.path.expanduser(path)
        if os.path.isdir(path):
            files += sorted(os.path.join(r, n) for r, _, ns in os.walk(path) for n in ns)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UsageError(f"--data: no such file or directory {path}")
    ids = []
    for name in files:
        with open(name, "rb") as fh:
            raw = fh.read()
        if b"\0" in raw[:4096]:  # a binary file (e.g. __pycache__/*.pyc): not text
            continue
        ids.append(np.asarray(tok.encode(raw.decode("utf-8", errors="replace")), np.int32))
    return np.concatenate(ids) if ids else np.zeros((0,), np.int32)


def stream_rows(tokens: np.ndarray, rows: int, window: int) -> np.ndarray:
    """[rows, n·window + 1]: `rows` contiguous parts of the stream, whole windows only."""
    per = (len(tokens) - 1) // rows
    n = per // window
    if n < 1:
        raise UsageError(f"the data has {len(tokens)} tokens: fewer than {rows} streams × "
                         f"{window} tokens (the learner's window); give more data or lower "
                         "--learn_batch")
    return np.stack([tokens[r * per: r * per + n * window + 1] for r in range(rows)])


def window_of(learner) -> int:
    """Tokens per row per jitted call: every group's chunk ends with a window (lcm), ≤ 8192."""
    w = math.lcm(learner.segment, learner.seq_len, *(g.chunk for g in learner.groups))
    return w if w <= 8192 else learner.segment * max(1, 8192 // learner.segment)


def run_stream(learner, state, rows: np.ndarray, window: int, token_bytes: np.ndarray,
               start: int = 0, progress: bool = False):
    """Yields (windows done, state, Σ nats, Σ bytes of that window) over the rows' windows."""
    n = (rows.shape[1] - 1) // window
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n * window * rows.shape[0], initial=start * window * rows.shape[0],
                   unit="tok", unit_scale=True, dynamic_ncols=True)
    try:
        for k in range(start, n):
            chunk = rows[:, k * window:(k + 1) * window + 1]
            state, nll = learner.learn(state, chunk)
            nats, nbytes = float(np.sum(nll)), float(token_bytes[chunk[:, 1:]].sum())
            if bar is not None:
                bar.update(chunk[:, 1:].size)
                bar.set_postfix(bpb=f"{nats / math.log(2) / max(nbytes, 1):.3f}")
            yield k + 1, state, nats, nbytes
    finally:
        if bar is not None:
            bar.close()


def heldout_bpb(model, prepared, config, windows: int, token_bytes: np.ndarray) -> float:
    """Held-out bpb of `model` (fresh state per window) on `windows` windows of the run's
    held-out split, strided over it (the trainer's windows)."""
    from hope_jax import data
    from hope_jax.eval import bits_per_byte
    T = int(config.data.seq_len)
    batches = data.eval_batches(prepared, "valid", seq_len=T, batch_size=min(8, windows),
                                windows=windows)
    return float(bits_per_byte(model, batches, token_bytes)["bpb"])


def plot_curve(curve: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [p["tokens"] for p in curve]
    ax.plot(x, [p.get("online_bpb", float("nan")) for p in curve], "o-",
            label="stream (online, before each update)")
    ax.plot(x, [p["heldout_bpb"] for p in curve], "s-", label="held-out (run's valid split)")
    ax.set_xlabel("tokens streamed")
    ax.set_ylabel("bits per byte")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _check_learn_flags(fv: flags.FlagValues) -> tuple[str, str]:
    workdir = trained_workdir(fv, "learn")
    if not fv.data:
        raise UsageError("learn needs --data=FILE[,DIR…] (the text to stream)")
    if not fv.out:
        raise UsageError("learn needs --out=NEWRUN (the directory for the learned checkpoints)")
    out = os.path.abspath(os.path.expanduser(fv.out))
    if out == os.path.abspath(workdir):
        raise UsageError("--out must be a new directory, not --workdir (the trained run stays "
                         "as it is)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out={fv.out} exists and is not a directory")
    for flag in ("heldout_windows",):
        if fv[flag].value < 1:
            raise UsageError(f"--{flag} must be ≥ 1")
    for flag in ("heldout_every", "save_every", "learn_max_tokens"):
        if fv[flag].value < 0:
            raise UsageError(f"--{flag} must be ≥ 0")
    return workdir, out


def _resume(out: str, learner, rows: int, config, vocab: int, fingerprint: dict):
    """(state, windows done, curve) from --out's newest learned checkpoint, or a fresh start."""
    from hope_jax.learn.checkpoint import restore_learned
    has = os.path.isdir(os.path.join(out, "checkpoints")) and any(
        n.isdigit() for n in os.listdir(os.path.join(out, "checkpoints")))
    if not has:
        return learner.init(rows), 0, []
    state, stream, step = restore_learned(out, learner, rows, config=config, vocab_size=vocab)
    if stream.get("fingerprint") != fingerprint:
        raise UsageError(f"--out={out} holds a learned state of other data or learn flags "
                         f"(saved {stream.get('fingerprint')}); use a new --out")
    curve_path = os.path.join(out, "learn", "curve.json")
    curve = json.load(open(curve_path))["curve"] if os.path.exists(curve_path) else []
    print(f"resumed from {out}/checkpoints/{step}", flush=True)
    return state, int(stream["windows"]), [p for p in curve if p["window"] <= stream["windows"]]


def cmd_learn(fv: flags.FlagValues, positional: list[str]) -> None:
    no_positional(positional)
    workdir, out = _check_learn_flags(fv)
    enable_compilation_cache()
    from hope_jax import data
    from hope_jax.learn.checkpoint import save_learned
    from hope_jax.train import load_for_inference
    model, tok, config = load_for_inference(workdir)
    learner = make_learner(model, config, fv)
    tokens = read_files(fv.data, tok)
    if fv.learn_max_tokens:
        tokens = tokens[:fv.learn_max_tokens + 1]
    B, W = fv.learn_batch, window_of(learner)
    rows = stream_rows(tokens, B, W)
    n = (rows.shape[1] - 1) // W
    fingerprint = dict(data=[os.path.abspath(p) for p in fv.data], tokens=int(len(tokens)),
                       batch=B, window=W, groups=fv.learn_groups, chunk=fv.learn_chunk,
                       optimizer=fv.learn_optimizer, lr=fv.learn_lr,
                       memory_gradient=fv.learn_memory_gradient)
    prepared = data.prepare(config.data, progress=False)
    token_bytes = np.asarray(tok.token_bytes())
    V = int(tok.vocab_size)
    state, start, curve = _resume(out, learner, B, config, V, fingerprint)
    every = max(1, (fv.heldout_every // (B * W)) if fv.heldout_every else math.ceil(n / 8))
    save_every = max(1, fv.save_every // (B * W)) if fv.save_every else n
    held = lambda st: heldout_bpb(learner.model(st.params), prepared, config,
                                  fv.heldout_windows, token_bytes)
    if not curve:
        curve.append(dict(window=0, tokens=0, heldout_bpb=held(state)))
    print(f"learning {', '.join(f'{g.name} (every {g.chunk} tokens)' for g in learner.groups)} "
          f"with {fv.learn_optimizer} lr {fv.learn_lr} over {B} streams × {n} windows of {W} "
          f"tokens", flush=True)
    os.makedirs(os.path.join(out, "learn"), exist_ok=True)
    nats = nbytes = 0.0
    t0, done = time.perf_counter(), 0
    updates = run_stream(learner, state, rows, W, token_bytes, start, True)
    for k, state, a, b in updates:
        nats, nbytes, done = nats + a, nbytes + b, done + B * W
        if k % every == 0 or k == n:
            curve.append(dict(window=k, tokens=k * B * W, heldout_bpb=held(state),
                              online_bpb=nats / math.log(2) / max(nbytes, 1.0)))
            nats = nbytes = 0.0
            _write_curve(out, curve, done / (time.perf_counter() - t0))
        if k % save_every == 0 or k == n:
            save_learned(out, state, config=config, vocab_size=V,
                         stream=dict(windows=k, fingerprint=fingerprint))
    last = curve[-1]
    print(f"streamed {n * B * W:,} tokens; held-out bpb {curve[0]['heldout_bpb']:.4f} → "
          f"{last['heldout_bpb']:.4f}; learned checkpoints in {out}/checkpoints; curve "
          f"{out}/learn/curve.png", flush=True)


def _write_curve(out: str, curve: list[dict], tokens_per_s: float) -> None:
    path = os.path.join(out, "learn", "curve.json")
    with open(path + ".tmp", "w") as f:
        json.dump(dict(curve=curve, tokens_per_s=tokens_per_s), f, indent=1)
    os.replace(path + ".tmp", path)
    plot_curve(curve, os.path.join(out, "learn", "curve.png"))


# ------------------------------------------------------------------ --learn on eval / generate
def eval_learn(fv: flags.FlagValues, workdir: str) -> dict:
    """Online (prequential) bpb of the run's held-out split read as B streams, with the learn
    groups learning and without (the same reading at learning rate 0): eval/learn.json."""
    from hope_jax import data
    from hope_jax.train import load_for_inference
    model, tok, config = load_for_inference(workdir)
    prepared = data.prepare(config.data, progress=False)
    token_bytes = np.asarray(tok.token_bytes())
    budget = fv.learn_max_tokens or 65536
    result: dict[str, Any] = dict(groups=fv.learn_groups, optimizer=fv.learn_optimizer,
                                  lr=fv.learn_lr, batch=fv.learn_batch)
    for key, lr in (("learning", fv.learn_lr), ("frozen", 0.0)):
        learner = make_learner(model, config, _Override(fv, learn_lr=lr))
        W = window_of(learner)
        rows = stream_rows(np.asarray(prepared.tokens("valid")[:budget + 1]), fv.learn_batch, W)
        state, nats, nbytes, t0 = learner.init(fv.learn_batch), 0.0, 0.0, time.perf_counter()
        for _, _state, a, b in run_stream(learner, state, rows, W, token_bytes, 0, True):
            nats, nbytes = nats + a, nbytes + b
        result[key] = dict(bpb=nats / math.log(2) / max(nbytes, 1.0), tokens=int(rows[:, 1:].size),
                           tokens_per_s=rows[:, 1:].size / (time.perf_counter() - t0))
    result["gain"] = result["frozen"]["bpb"] - result["learning"]["bpb"]
    path = os.path.join(workdir, "eval", "learn.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"held-out bpb read online: {result['learning']['bpb']:.4f} learning vs "
          f"{result['frozen']['bpb']:.4f} frozen (gain {result['gain']:+.4f}); {path}")
    return result


class _Override:
    """fv with some values replaced (attribute access only)."""

    def __init__(self, fv, **values):
        self._fv, self._values = fv, values

    def __getattr__(self, name):
        return self._values[name] if name in self._values else getattr(self._fv, name)


def generate_learn(fv: flags.FlagValues, workdir: str, settings: Callable) -> None:
    """generate --learn: learn from --data and the prompt (one stream), then sample from the
    learned parameters."""
    import jax
    from hope_jax.sampling import generate
    from hope_jax.train import load_for_inference
    model, tok, config = load_for_inference(workdir)
    s = settings(fv, config.sample)
    ids = np.asarray(tok.encode(s["prompt"]), np.int32)
    if ids.size == 0:
        ids = np.asarray([tok.bos_id], np.int32)
    learner = make_learner(model, config, _Override(fv, learn_batch=1))
    stream = np.concatenate([read_files(fv.data, tok), ids]) if fv.data else ids
    usable = (len(stream) - 1) // learner.segment * learner.segment
    if usable < max(g.chunk for g in learner.groups):
        import sys
        print(f"note: --learn read {len(stream)} tokens, fewer than the slowest group's chunk "
              f"({max(g.chunk for g in learner.groups)}): not every group took a step "
              "(give --data)", file=sys.stderr)
    params = learner.params
    if usable:
        state, _ = learner.learn(learner.init(1), stream[None, :usable + 1])
        params = state.params
    out = generate(learner.model(params), ids[None], s["max_tokens"],
                   jax.random.PRNGKey(s["seed"]), temperature=s["temperature"],
                   top_k=s["top_k"], top_p=s["top_p"])
    print(s["prompt"] + tok.decode(np.asarray(out[0])))


def register_commands() -> None:
    """Registers `hope-jax learn` and adds --learn (and its flags) to eval and generate."""
    register("learn", Command(
        "keep learning after deployment: stream text through a trained run, its CMS levels (or "
        "chosen parameters) updated from the next-token loss; checkpoints to --out",
        f"{PROG} learn --workdir=RUN --data=FILE[,DIR…] --out=NEWRUN [flags]",
        COMMAND_FLAGS, cmd_learn))
    ev, gen = COMMANDS["eval"], COMMANDS["generate"]

    def run_eval(fv, positional):
        ev.run(fv, positional)
        if fv.learn:
            eval_learn(fv, trained_workdir(fv, "eval"))

    def run_generate(fv, positional):
        if not fv.learn:
            return gen.run(fv, positional)
        no_positional(positional)
        workdir = trained_workdir(fv, "generate")
        enable_compilation_cache()
        generate_learn(fv, workdir, sampling_settings)

    extra = ("learn",) + LEARN_FLAGS + ("learn_max_tokens",)
    COMMANDS["eval"] = dataclasses.replace(ev, flags=ev.flags + extra, run=run_eval)
    COMMANDS["generate"] = dataclasses.replace(gen, flags=gen.flags + extra + ("data",),
                                               run=run_generate)
