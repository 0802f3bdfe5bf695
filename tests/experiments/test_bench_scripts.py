"""experiments/bench/bench_models.py and bench_decode.py: quick mode end to end, valid JSON.
(Speed is measured by the benchmarks themselves, never here.)"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "experiments", "bench")


def _load(name: str, filename: str):
    sys.path.insert(0, BENCH)   # bench_decode imports bench_models
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, filename))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(BENCH)
    return mod


def _check_models_json(path, models):
    out = json.loads(open(path).read())
    assert out["lengths"] == [128, 256]
    assert out["peak_flops"]["peak"] > 0
    assert {r["model"] for r in out["rows"]} == set(models)
    for r in out["rows"]:
        assert r["status"] == "ok" and r["tokens_per_s"] > 0 and r["compile_s"] > 0
        assert r["flops_per_token"] > 0 and r["params"] > 0
    return out


def _check_decode_json(path, models):
    out = json.loads(open(path).read())
    assert out["contexts"] == [64, 256]
    assert {r["model"] for r in out["rows"]} == set(models)
    for r in out["rows"]:
        assert r["ms_per_token"] > 0 and isinstance(r["finite"], bool)
    assert set(out["growth_longest_over_shortest"]) == set(models)
    return out


def test_bench_models_quick_transformer(tmp_path):
    mod = _load("hope_bench_models_t", "bench_models.py")
    out = tmp_path / "models.json"
    assert mod.main(["--quick", "--models", "transformer", "--out", str(out)]) == 0
    _check_models_json(out, ["transformer"])
    assert (tmp_path / "models.png").exists()


def test_bench_decode_quick_transformer(tmp_path):
    mod = _load("hope_bench_decode_t", "bench_decode.py")
    out = tmp_path / "decode.json"
    assert mod.main(["--quick", "--models", "transformer", "--out", str(out)]) == 0
    _check_decode_json(out, ["transformer"])
    assert (tmp_path / "decode.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HOPE_JAX_BENCH_TESTS"),
                    reason="compiles Hope and Titans training and decoding (minutes); the scripts "
                           "are covered on Transformer++ above. Set HOPE_JAX_BENCH_TESTS=1.")
def test_bench_quick_all_models(tmp_path):
    models = ["hope", "titans_mag", "transformer"]
    mm = _load("hope_bench_models_all", "bench_models.py")
    assert mm.main(["--quick", "--no_plot", "--out", str(tmp_path / "m.json")]) == 0
    out = _check_models_json(tmp_path / "m.json", models)
    assert set(out["ratio_hope_over_transformer"]) == {"128", "256"}
    md = _load("hope_bench_decode_all", "bench_decode.py")
    assert md.main(["--quick", "--no_plot", "--out", str(tmp_path / "d.json")]) == 0
    _check_decode_json(tmp_path / "d.json", models)


def test_bench_peers_records_why_a_peer_failed(tmp_path):
    """A peer that cannot start, or crashes (here: no torch in this environment), becomes a
    recorded reason, not an exception; its peak RSS is the child's own (os.wait4)."""
    sys.path.insert(0, os.path.join(BENCH, "peers"))
    try:
        mod = _load("hope_bench_peers", "bench_peers.py")
    finally:
        sys.path.remove(os.path.join(BENCH, "peers"))
    missing = mod.run_side(str(tmp_path / "no_python"), "run_torch_peer.py", "titans_layer_1k",
                           1, 60)
    assert missing["error"].startswith("could not start")
    crashed = mod.run_side(sys.executable, "run_torch_peer.py", "titans_layer_1k", 1, 120)
    if "error" not in crashed:  # torch is installed here after all: a real measurement
        assert crashed["tokens_per_s"] > 0 and crashed["peak_rss_gb"] > 0
    else:
        assert "torch" in crashed["error"], crashed
    assert mod.summarise([missing])["error"] == missing["error"]
