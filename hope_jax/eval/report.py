"""Report helpers: markdown tables and PNG plots (matplotlib, Agg backend, no display needed).

  markdown_table(rows)                          list of dicts → a markdown table string
  read_loss_series(path)                        a metrics jsonl → (steps, losses)
  plot_loss_curves(series, path)                one line per run
  plot_niah_heatmap(acc, lengths, depths, path) accuracy [lengths, depths] as a heat map
  plot_forgetting(forgetting, domains, path)    bars per domain (or per model × domain)
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np


def _fmt(v, digits: int) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                   digits: int = 3, path: str | None = None) -> str:
    """Rows of dicts → a GitHub markdown table (columns default to the keys in first-seen order);
    written to `path` too when given."""
    if not rows:
        raise ValueError("no rows")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, ""), digits) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return text


def read_loss_series(path: str, key: str = "loss", step_key: str = "step"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` from a jsonl of metric records (records without it skipped)."""
    steps, values = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            rec = json.loads(line)
            if key in rec:
                steps.append(rec.get(step_key, i))
                values.append(float(rec[key]))
    if not values:
        raise ValueError(f"no {key!r} records in {path}")
    return np.asarray(steps), np.asarray(values)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_loss_curves(series: Mapping[str, Sequence[float] | tuple[Sequence, Sequence]],
                     path: str, ylabel: str = "loss", title: str = "",
                     log_y: bool = False) -> str:
    """series: name → losses, or name → (steps, losses). Writes a PNG; returns its path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in series.items():
        steps, values = (s if isinstance(s, tuple) and len(s) == 2
                         else (np.arange(len(s)), s))
        ax.plot(np.asarray(steps), np.asarray(values, float), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_niah_heatmap(acc: np.ndarray, lengths: Sequence[int], depths: Sequence[float],
                      path: str, title: str = "NIAH accuracy") -> str:
    """acc float[len(lengths), len(depths)] in [0, 1] → heat map (depth × length) PNG."""
    acc = np.asarray(acc, float)
    if acc.shape != (len(lengths), len(depths)):
        raise ValueError(f"acc shape {acc.shape} ≠ ({len(lengths)}, {len(depths)})")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(lengths), 1.2 + 0.5 * len(depths)))
    im = ax.imshow(acc.T, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="upper")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    for i in range(len(lengths)):
        for j in range(len(depths)):
            ax.text(i, j, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def plot_forgetting(forgetting: Mapping[str, Sequence[float]] | Sequence[float],
                    domains: Sequence[str], path: str, title: str = "forgetting (Δ bpb)") -> str:
    """Bars of forgetting per domain; a mapping model → values gives grouped bars."""
    groups = forgetting if isinstance(forgetting, Mapping) else {"": forgetting}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(domains), 4))
    width = 0.8 / len(groups)
    x = np.arange(len(domains))
    for k, (name, values) in enumerate(groups.items()):
        values = np.asarray(values, float)
        if values.shape != (len(domains),):
            raise ValueError(f"{name or 'forgetting'}: {values.shape[0]} values for "
                             f"{len(domains)} domains")
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, values, width, label=name or None)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, list(domains))
    ax.set_ylabel("bpb at end − bpb after own phase")
    ax.set_title(title)
    if len(groups) > 1:
        ax.legend()
    return _save(fig, path)
