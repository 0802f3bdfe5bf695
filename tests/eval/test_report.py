"""Report helpers: a markdown table with the right cells, and PNGs that are written."""
import json

import numpy as np
import pytest

from hope_jax.eval.report import (markdown_table, plot_forgetting, plot_loss_curves,
                                  plot_niah_heatmap, read_loss_series)


def test_markdown_table(tmp_path):
    text = markdown_table([dict(model="hope", bpb=1.23456), dict(model="transformer", acc=0.5)],
                          path=str(tmp_path / "t.md"))
    lines = text.splitlines()
    assert lines[0] == "| model | bpb | acc |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| hope | 1.235 |  |" and lines[3] == "| transformer |  | 0.500 |"
    assert (tmp_path / "t.md").read_text() == text


def test_plots_are_written(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(dict(step=i, loss=5.0 / (i + 1))) + "\n" for i in range(5))
                   + json.dumps(dict(step=5, eval_bpb=2.0)) + "\n")
    steps, losses = read_loss_series(str(log))
    assert list(steps) == [0, 1, 2, 3, 4] and losses[0] == 5.0
    paths = [plot_loss_curves({"a": (steps, losses), "b": [3.0, 2.0, 1.0]},
                              str(tmp_path / "loss.png")),
             plot_niah_heatmap(np.random.default_rng(0).random((2, 3)), [256, 512],
                               [0.0, 0.5, 1.0], str(tmp_path / "niah.png")),
             plot_forgetting({"hope": [0.1, 0.0, 0.0], "transformer": [0.3, 0.1, 0.0]},
                             ["en", "py", "ja"], str(tmp_path / "sub" / "forget.png"))]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_niah_heatmap(np.zeros((2, 2)), [1], [0.5], str(tmp_path / "bad.png"))
