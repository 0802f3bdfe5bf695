"""The memory probe: does a model's in-context memory do measurable work?

A memory model (Hope, Titans, the linear recurrences) writes its memories while it reads. The
probe compares the same parameters with those writes on and off (`layers.memory_writes`: every
in-context level frozen at its meta-learned initial state) and asks what the memory is *for*:

  (a) write ablation — held-out bits per byte on seeded random windows, writes on vs off;
  (b) loss by position — bits per byte along windows of 1×, 4× and 16× the training length
      (a model that learns in context gets better along the window, not worse), with the
      first- and last-quarter figures;
  (c) memorisation gain — `memorization_bpb` through whole documents (memory reset per
      document vs carried across documents);
  (d) MQAR — a fresh model of the same architecture trained on multi-query associative
      recall, scored with its writes on and off.

For a pure-attention model (c) is 0 and the on/off pairs are equal: it has nothing to switch off.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hope_jax.data.bpb import paired_difference_se
from hope_jax.eval._scoring import progress_bar, target_logprobs
from hope_jax.layers.memory_writes import memory_writes, writing_modules

LENGTH_MULTIPLES = (1, 4, 16)
CURVE_BINS = 16


def random_windows(stream: np.ndarray, length: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` windows of `length` + 1 tokens at seeded random starts anywhere in `stream`
    ([count, length + 1] int32). Raises if the stream is shorter than one window."""
    stream = np.asarray(stream)
    room = stream.shape[0] - (length + 1)
    if room < 0:
        raise ValueError(f"the held-out stream has {stream.shape[0]} tokens; a window of "
                         f"{length} needs {length + 1}")
    starts = np.random.default_rng(seed).integers(0, room + 1, count)
    return np.stack([stream[s:s + length + 1] for s in starts]).astype(np.int32)


@nnx.jit
def _nll(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    """tokens [B, L+1] → nats of every target [B, L], one forward from a fresh state."""
    return -target_logprobs(model(tokens[:, :-1]), tokens[:, 1:])


def position_nll(model: nnx.Module, windows: np.ndarray, batch_size: int = 4,
                 progress: bool = False) -> np.ndarray:
    """Nats of every target of every window, [count, length] (batches padded to one shape)."""
    out = []
    for i in progress_bar(range(0, len(windows), batch_size), progress, desc="probe",
                          unit="batch"):
        rows = windows[i:i + batch_size]
        pad = batch_size - len(rows)
        if pad:
            rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
        out.append(np.asarray(_nll(model, jnp.asarray(rows)))[:batch_size - pad])
    return np.concatenate(out).astype(np.float64)


def _bpb(nats: np.ndarray, nbytes: np.ndarray) -> float:
    return float(nats.sum() / max(nbytes.sum(), 1) / math.log(2))


def position_summary(nats: np.ndarray, nbytes: np.ndarray, bins: int = CURVE_BINS) -> dict:
    """bpb overall, per quarter and per bin of positions along the window; the last − first
    quarter difference with its standard error paired over the windows (with few windows the
    text of those windows, not the position, can decide its sign)."""
    edges = lambda n: np.linspace(0, nats.shape[1], n + 1).round().astype(int)
    split = lambda n: [_bpb(nats[:, a:b], nbytes[:, a:b])
                       for a, b in zip(edges(n)[:-1], edges(n)[1:])]
    quarters = split(4)
    e = edges(4)
    part = lambda x, i: x[:, e[i]:e[i + 1]].sum(axis=1).astype(np.float64)
    se = paired_difference_se(part(nats, 3), part(nbytes, 3), part(nats, 0), part(nbytes, 0))
    return dict(bpb=_bpb(nats, nbytes), quarters=quarters, curve=split(bins),
                last_minus_first=quarters[-1] - quarters[0], last_minus_first_se=se)


def window_probe(model: nnx.Module, stream: np.ndarray, token_bytes: np.ndarray, train_len: int,
                 *, windows: int = 16, multiples: Sequence[int] = LENGTH_MULTIPLES,
                 batch_size: int = 4, seed: int = 0, progress: bool = False) -> dict:
    """(a) and (b): for each length m·T, the same random windows scored with writes on and off.

    Returns {str(m·T): dict(multiple, on=position_summary, off=…, ablation=off.bpb − on.bpb)}.
    Lengths longer than the stream are skipped."""
    token_bytes = np.asarray(token_bytes, np.int64)
    out = {}
    for m in multiples:
        length = int(m * train_len)
        if length + 1 > len(stream):
            continue
        rows = random_windows(stream, length, windows, seed + m)
        nbytes = token_bytes[rows[:, 1:]]
        entry = dict(multiple=m, windows=windows)
        sums = {}
        for mode in ("on", "off"):
            with memory_writes(model, mode == "on"):
                nats = position_nll(model, rows, min(batch_size, windows), progress)
            entry[mode] = position_summary(nats, nbytes)
            sums[mode] = nats.sum(axis=1)
        entry["ablation"] = entry["off"]["bpb"] - entry["on"]["bpb"]
        row_bytes = nbytes.sum(axis=1).astype(np.float64)
        entry["ablation_se"] = paired_difference_se(sums["off"], row_bytes, sums["on"], row_bytes)
        out[str(length)] = entry
    return out


def mqar_probe(model_config, *, steps: int, seq_len: int = 128, num_kv_pairs: int = 16,
               batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
               progress: bool = False) -> dict:
    """(d): train a fresh model of `model_config` on MQAR, then score it with writes on and off."""
    from hope_jax.eval.mqar import mqar_accuracy, mqar_batches, train_mqar
    model, res = train_mqar(model_config, steps, batch_size=batch_size, seq_len=seq_len,
                            num_kv_pairs=num_kv_pairs, lr=lr, seed=seed, progress=progress)
    held_out = lambda: mqar_batches(seed + 20_000, batch_size, seq_len, num_kv_pairs,
                                    model_config.vocab_size, 4)
    acc = {}
    for mode in ("on", "off"):
        with memory_writes(model, mode == "on"):
            acc[mode] = mqar_accuracy(model, held_out())
    return dict(steps=steps, seq_len=seq_len, num_kv_pairs=num_kv_pairs, on=acc["on"],
                off=acc["off"], drop=acc["on"] - acc["off"], skipped_steps=res["skipped_steps"],
                final_loss=float(np.mean(res["losses"][-20:])),
                loss_curve=[float(np.mean(c)) for c in  # ≤ 20 points, none of them empty
                            np.array_split(res["losses"], min(20, len(res["losses"])))])


def plot_memory_probe(result: dict, path: str, title: str = "") -> None:
    """PNG: bits per byte along the window for every probed length, writes on (solid) and off
    (dashed), x in multiples of the training length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    windows = result.get("windows", {})
    for i, (length, entry) in enumerate(sorted(windows.items(), key=lambda kv: int(kv[0]))):
        for mode, style in (("on", "-"), ("off", "--")):
            curve = entry[mode]["curve"]
            x = (np.arange(len(curve)) + 0.5) / len(curve) * entry["multiple"]
            ax.plot(x, curve, style, color=f"C{i}",
                    label=f"{length} tokens, writes {mode}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("position along the window (× training length)")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title(title or "memory probe: loss by position, writes on vs off")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_lines(result: dict) -> list[str]:
    """One line per probed length, then the memorisation gain and MQAR when measured."""
    lines = []
    se = lambda x: f" ± {x:.4f}" if x == x else ""   # x == x: not NaN
    for length, e in sorted(result["windows"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"windows of {length}: bpb {e['on']['bpb']:.4f} writes on, "
                     f"{e['off']['bpb']:.4f} off (ablation {e['ablation']:+.4f}"
                     f"{se(e.get('ablation_se', float('nan')))}); last − first quarter "
                     f"{e['on']['last_minus_first']:+.4f}"
                     f"{se(e['on'].get('last_minus_first_se', float('nan')))} (SE over "
                     f"{e.get('windows', '?')} windows)")
    if result.get("memorization"):
        m = result["memorization"]
        lo, hi = m.get("gain_ci95", (float("nan"), float("nan")))
        lines.append(f"memorisation gain {m['gain']:+.4f} bpb (95% interval {lo:+.4f} … "
                     f"{hi:+.4f}, {m['documents']} documents)")
    if result.get("mqar"):
        lines.append(f"MQAR accuracy {result['mqar']['on']:.3f} writes on, "
                     f"{result['mqar']['off']:.3f} off")
    return lines


def memory_probe(model: nnx.Module, stream: np.ndarray, token_bytes: np.ndarray, train_len: int,
                 *, documents: Sequence[np.ndarray] = (), model_config=None, mqar_steps: int = 0,
                 windows: int = 16, multiples: Sequence[int] = LENGTH_MULTIPLES, seed: int = 0,
                 progress: bool = False) -> dict:
    """All four parts of the probe; (c) needs `documents`, (d) `model_config` and `mqar_steps`.

    Returns dict(writing_modules, train_len, windows={…}, memorization={…} or None,
    mqar={…} or None)."""
    from hope_jax.eval.memorization import memorization_bpb
    result = dict(writing_modules=len(writing_modules(model)), train_len=int(train_len))
    result["windows"] = window_probe(model, stream, token_bytes, train_len, windows=windows,
                                     multiples=multiples, seed=seed, progress=progress)
    result["memorization"] = None
    if documents:
        result["memorization"] = memorization_bpb(model, documents, token_bytes,
                                                  chunk_len=int(train_len), progress=progress)
    result["mqar"] = None
    if model_config is not None and mqar_steps > 0:
        result["mqar"] = mqar_probe(model_config, steps=mqar_steps, seed=seed, progress=progress)
    return result
