"""experiments/compare/run.py: the report writer on fabricated results (no training)."""
from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


compare_run = _load("hope_experiments_compare_run", "experiments/compare/run.py")


def _fabricated() -> dict:
    comp = compare_run.load_comparison("smoke")
    domains = comp["continual"]["phases"]
    models = {}
    for i, name in enumerate(["hope", "transformer"]):
        models[name] = dict(
            train=dict(arch=name, size="tiny", overrides={"model.num_blocks": 3} if i else {},
                       params=191322 + i * 2300, tokens=384, steps=6, stopped="done",
                       wall_s=12.5, tokens_per_s=1234.5 + i, final_loss=2.71828 + i,
                       skipped_steps=i, train_eval_bpb=3.1,
                       loss_curve=dict(steps=[1, 2, 3], losses=[5.0, 4.0, 3.5 + i]),
                       stage_wall_s=13.0),
            bpb=dict(bpb=2.34567 + i, ppl=9.0, write_ablation_1x=0.0123 * (1 - i),
                     write_ablation_4x=0.0456 * (1 - i), stage_wall_s=1.0,
                     window_nats=[10.0 + i, 12.0 + 0.5 * i, 9.0], window_bytes=[8.0] * 3),
            niah=dict(lengths=[256], depths=[0.5], accuracy=[[0.625 - 0.5 * i]], mean=0.625,
                      stage_wall_s=2.0),
            memorization=dict(off_bpb=2.5, on_bpb=2.25 + 0.25 * i, gain=0.25 - 0.25 * i,
                              gain_se=0.0625, documents=2, stage_wall_s=3.0),
            mqar=dict(accuracy=0.4375 + i * 0.1, final_loss=1.5, chance=1 / 32, stage_wall_s=4.0),
            continual=dict(domains=domains, bpb=[[3.0, None], [3.5 + i, 2.0]],
                           forgetting=[0.5 + i, 0.0], mean_forgetting=0.5 + i, stage_wall_s=5.0),
        )
    models["gated_deltanet"] = {}   # not run yet: its cells read "—"
    return dict(name="smoke", command="python experiments/compare/run.py --comparison=smoke",
                git_commit="0123abc", host="test", finished="now", wall_s=60.0,
                comparison=comp, notes=["a note"], models=models)


@pytest.mark.fast
def test_report_tables_pngs_and_json(tmp_path):
    results = _fabricated()
    path = compare_run.write_report(results, str(tmp_path))
    text = open(path, encoding="utf-8").read()
    for s in ["python experiments/compare/run.py --comparison=smoke", "0123abc", "a note",
              "191,322", "193,622", "1234", "2.718", "2.346", "0.62", "0.2500 (0.0625)", "0.438",
              "forgetting en_pip", "1.5000", "gated_deltanet", "—", "0.012 / 0.046",
              "0.000 / 0.000", "write ablation (T / 4T)",
              # transformer − hope, paired: Σ (1, 0.5, 0) nats / (24 bytes · ln 2) = 0.0902, and
              # the ratio estimator's error √(3/2 · (0.5² + 0 + 0.5²)) / (24 ln 2) = 0.0521
              "+0.0902 (0.0521)"]:
        assert s in text, s
    for png in ["loss_curves.png", "niah_hope.png", "niah_transformer.png", "forgetting.png"]:
        p = tmp_path / png
        assert p.exists() and p.stat().st_size > 1000, png
        assert f"({png})" in text
    data = json.loads((tmp_path / "results.json").read_text())   # strict JSON (no NaN)
    assert data["models"]["hope"]["bpb"]["bpb"] == pytest.approx(2.34567)
    assert data["models"]["hope"]["continual"]["bpb"][0][1] is None


@pytest.mark.fast
def test_clean_json_and_resume_skips_done_stages(tmp_path):
    assert compare_run.clean_json({"a": float("nan"), "b": [1.0, math.inf]}) == {"a": None,
                                                                               "b": [1.0, None]}
    model = dict(name="m", arch="transformer", size="tiny", overrides={})
    mdir = tmp_path / "m"
    mdir.mkdir()
    (mdir / "stages.json").write_text(json.dumps({"train": {"x": 1}, "bpb": {"bpb": 2.0}}))
    calls = []
    original = dict(compare_run.STAGE_FNS)
    try:
        compare_run.STAGE_FNS["niah"] = lambda *a: calls.append("niah") or {"mean": 0.5}
        done = compare_run.run_model(model, {}, str(tmp_path), stages=("train", "bpb", "niah"),
                                     log=lambda s: None)
    finally:
        compare_run.STAGE_FNS.update(original)
    assert calls == ["niah"]          # train and bpb were stored: skipped
    assert done["niah"]["mean"] == 0.5
    assert json.loads((mdir / "stages.json").read_text())["niah"]["mean"] == 0.5


@pytest.mark.fast
def test_comparisons_are_equal_tokens():
    comp = compare_run.load_comparison("tiny")
    assert {m["name"] for m in comp["models"]} == {"hope", "titans_mag", "transformer",
                                                    "gated_deltanet"}
    assert comp["train"]["corpus"] == "en_pip"
    assert comp["continual"]["phases"] == ["en_pip", "python_stdlib", "japanese"]


@pytest.mark.fast
def test_seed_overrides_every_model_and_builds_a_valid_config():
    """--seed N trains every model from another initialisation and batch order, through keys the
    config accepts; the comparison it came from is left as it was."""
    comp = compare_run.load_comparison("tiny2k")
    seeded = compare_run.with_seed(comp, 1)
    for m, s in zip(comp["models"], seeded["models"]):
        assert s["overrides"] == {**m["overrides"], "train.seed": 1, "data.shuffle_seed": 1}
        assert "train.seed" not in m["overrides"]
        config = compare_run.make_config(s, seeded)
        assert config.train.seed == 1 and config.data.shuffle_seed == 1


def test_tiny_parameter_counts_within_15_percent():
    comp = compare_run.load_comparison("tiny")
    counts = [compare_run.param_count(compare_run.make_config(m, comp), 260)
              for m in comp["models"]]
    assert max(counts) / min(counts) < 1.15, counts


@pytest.mark.fast
def test_models_flag_reruns_some_but_reports_all(tmp_path):
    """`--models m` runs only m, yet the report keeps every model that has results; an unknown
    name is refused."""
    root, report = tmp_path / "runs", tmp_path / "report"
    for name, bpb in (("hope", 2.5), ("transformer", 2.75)):
        (root / name).mkdir(parents=True)
        (root / name / "stages.json").write_text(json.dumps({"bpb": {"bpb": bpb}}))
    assert compare_run.main(["--comparison=smoke", "--root", str(root), "--report", str(report),
                             "--models", "transformer", "--stages", ""]) == 0
    saved = json.loads((report / "results.json").read_text())
    assert saved["models"]["hope"]["bpb"]["bpb"] == 2.5
    assert saved["models"]["transformer"]["bpb"]["bpb"] == 2.75
    with pytest.raises(SystemExit):
        compare_run.main(["--comparison=smoke", "--root", str(root), "--report", str(report),
                          "--models", "nope", "--stages", ""])


@pytest.mark.fast
def test_seeds_summary_means_and_errors_over_seeds(tmp_path):
    """seeds.py: per seed, a model's bpb and its difference to the first model (paired over the
    windows); over the seeds, their mean and its standard error. Hand numbers: Transformer++
    reads 10 and 20 more nats than Hope in each of 4 windows of 100 bytes at seeds 0 and 1, so
    it is 0.1/ln 2 and 0.2/ln 2 bpb worse; the mean is 0.15/ln 2, the error over two seeds half
    their gap, 0.05/ln 2."""
    seeds = _load("hope_experiments_compare_seeds", "experiments/compare/seeds.py")
    comp = compare_run.load_comparison("smoke")
    comp["models"] = [m for m in comp["models"] if m["name"] in ("hope", "transformer")]
    for seed, extra in ((0, 10.0), (1, 20.0)):
        models = {name: dict(bpb=dict(bpb=2.0 + i * extra / 100, window_bytes=[100.0] * 4,
                                      window_nats=[100.0 + i * extra] * 4,
                                      write_ablation_4x=0.05 * (1 - i)),
                             memorization=dict(gain=0.001 * (1 - i)))
                  for i, name in enumerate(["hope", "transformer"])}
        out = tmp_path / ("tiny" if seed == 0 else f"tiny_seed{seed}")
        out.mkdir()
        (out / "results.json").write_text(json.dumps(dict(comparison=comp, models=models)))
    assert seeds.main(["--comparison=tiny", "--seeds=0,1", "--reports", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "tiny_seeds" / "results.json").read_text())
    row = saved["models"]["transformer"]
    ln2 = math.log(2)
    assert row["minus_ref"]["0"][0] == pytest.approx(0.1 / ln2)
    assert row["minus_ref"]["1"][0] == pytest.approx(0.2 / ln2)
    assert row["minus_ref"]["0"][1] == pytest.approx(0.0)      # the same gap in every window
    assert row["minus_ref_mean"] == pytest.approx(0.15 / ln2)
    assert row["minus_ref_se"] == pytest.approx(0.05 / ln2)
    assert row["bpb_mean"] == pytest.approx(2.15) and row["bpb_se"] == pytest.approx(0.05)
    assert saved["models"]["hope"]["write_ablation_4x"] == {"0": 0.05, "1": 0.05}
    assert "| transformer |" in (tmp_path / "tiny_seeds" / "report.md").read_text()
    with pytest.raises(SystemExit):
        seeds.main(["--comparison=tiny", "--seeds=0,3", "--reports", str(tmp_path)])
