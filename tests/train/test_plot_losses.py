"""loss.png: training loss (nats/token) and held-out bpb on two labelled axes; a metrics line cut
by a killed run is skipped."""
import json

import matplotlib

from hope_jax.train.loop import plot_losses


def test_two_labelled_axes_and_a_cut_line(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    rows = [dict(step=s, loss=3.0 - s / 10) for s in range(1, 11)] + [dict(step=10, bpb=2.5)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 11, "lo')
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    plot_losses(str(metrics), str(tmp_path / "loss.png"))
    assert (tmp_path / "loss.png").stat().st_size > 0
    labels = sorted(ax.get_ylabel() for ax in seen["fig"].axes)
    assert labels == ["held-out bits per byte", "training loss (nats/token)"]
