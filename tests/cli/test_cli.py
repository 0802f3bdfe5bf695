"""The `hope-jax` command line, run as users run it (subprocesses): bad configs fail early with a
message naming the key; train → generate → eval work end to end on a tiny files corpus."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _cli(*args, cwd=ROOT, timeout=600):
    env = dict(os.environ, HOPE_JAX_COMPILATION_CACHE=os.path.join(ROOT, ".jax_cache"),
               JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # one device, as on a laptop
    return subprocess.run([sys.executable, "-m", "hope_jax.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.fast
@pytest.mark.parametrize("args,message", [
    (["--config.optim.learning_rate=1"], "--config.optim.learning_rate: unknown key "
                                          "'learning_rate' in config.optim"),
    (["--config.optim.lr=fast"], "could not convert string to float"),
    (["--config.model.num_heads=3"], "config.model.num_heads: SelfModifyingConfig has 3 heads"),
    (["--config.mesh.data=3"], "config.mesh"),
    (["--config=experiments/configs/nope.py"], "nope.py"),
])
def test_bad_configs_exit_2_naming_the_key(args, message):
    out = _cli("train", *args, "--workdir=/nonexistent/never/created")
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert not os.path.exists("/nonexistent/never/created")


@pytest.mark.fast
def test_usage_without_a_command():
    out = _cli()
    assert out.returncode == 2 and "hope-jax train" in out.stderr


@pytest.mark.slow
def test_train_generate_eval_end_to_end(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps".split()
    for i in range(12):
        (corpus / f"doc{i}.txt").write_text(" ".join(words[(i + j) % len(words)]
                                                      for j in range(80)) + "\n")
    cfg = tmp_path / "tiny.py"
    cfg.write_text(textwrap.dedent(f"""
        from hope_jax.config import default_config
        def get_config():
            c = default_config()
            c.model.arch, c.model.d_model, c.model.num_blocks = "gated_deltanet", 32, 1
            c.data.corpus, c.data.files = "files", ({str(corpus)!r} + "/*.txt",)
            c.data.held_out_fraction, c.data.seq_len = 0.25, 16
            c.data.cache_dir = {str(tmp_path / "cache")!r}
            c.train.steps, c.train.global_batch, c.train.log_every = 4, 4, 1
            c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every = 0, 2, 2
            c.train.progress, c.train.peak_flops = False, 1e11
            return c
    """))
    workdir = tmp_path / "run"
    out = _cli("train", f"--config={cfg}", f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((workdir / "result.json").read_text())
    assert result["step"] == 4 and result["bpb"] > 0
    assert (workdir / "loss.png").stat().st_size > 0 and any((workdir / "tb").iterdir())
    assert "held-out bits per byte" in out.stdout

    out = _cli("generate", f"--workdir={workdir}", "--prompt=the quick", "--max_tokens=12",
               "--temperature=0")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("the quick")

    zero_shot = os.path.join(FIXTURES, "eval", sorted(os.listdir(os.path.join(FIXTURES,
                                                                            "eval")))[0])
    out = _cli("eval", f"--workdir={workdir}", "--tasks=bpb,memorization,zero_shot",
               f"--zero_shot={zero_shot}", "--eval_batches=2")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((workdir / "eval" / "results.json").read_text())
    assert results["bpb"]["bpb"] > 0 and "off" in results["memorization"]
    assert os.path.basename(zero_shot) in results["zero_shot"]
    # the trainer's final held-out bpb and eval's score the same windows with the same function
    assert abs(results["bpb"]["bpb"] - result["bpb"]) <= 1e-4 * result["bpb"]
    assert results["completed"] == ["bpb", "memorization", "zero_shot"]
    assert len(list((workdir / "eval" / "runs").iterdir())) == 1

    out = _cli("eval", f"--workdir={workdir}", "--tasks=perplexity")
    assert out.returncode == 2 and "--tasks: unknown ['perplexity']" in out.stderr


@pytest.mark.slow
def test_prepare_once_then_train_and_generate_from_the_shards(tmp_path):
    """`data prepare` writes ArrayRecord shards with an existing sentencepiece model; `train`
    reads them (no cache of its own), saves the tokenizer inside the run, and `generate` decodes
    with it after the shards are gone."""
    from hope_jax.data import SentencePieceTokenizer
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    words = ["alpha", "beta"] + ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), n))
                                 for n in rng.integers(3, 8, 300)]
    docs = [" ".join(rng.choice(words, 80)) for _ in range(24)]
    for i, d in enumerate(docs):
        (corpus / f"doc{i:02d}.txt").write_text(d + "\n")
    SentencePieceTokenizer.train(docs, 300).save(tmp_path / "spm")
    prepared, workdir, cache = tmp_path / "prepared", tmp_path / "run", tmp_path / "cache"
    data = ["--config.data.corpus=files", f"--config.data.files={corpus}/*.txt",
            "--config.data.held_out_fraction=0.25", "--config.data.tokenizer=bpe",
            f"--config.data.tokenizer_path={tmp_path / 'spm' / 'tokenizer.model'}",
            f"--config.data.prepared_dir={prepared}", "--config.data.prepare_workers=0",
            f"--config.data.cache_dir={cache}", "--config.data.seq_len=16"]
    out = _cli("data", "prepare", *data)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (prepared / "index.json").exists()
    model = ["--config.model.arch=gated_deltanet", "--config.model.d_model=32",
             "--config.model.num_blocks=1", "--config.train.steps=3",
             "--config.train.global_batch=4", "--config.train.eval_batches=1",
             "--config.train.progress=False"]
    out = _cli("train", f"--workdir={workdir}", *data, *model)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((workdir / "result.json").read_text())["step"] == 3
    assert not cache.exists()  # the shards were read, nothing was prepared again
    saved = workdir / "tokenizer" / "tokenizer.model"
    assert saved.read_bytes() == (tmp_path / "spm" / "tokenizer.model").read_bytes()
    os.rename(prepared, tmp_path / "moved")
    out = _cli("generate", f"--workdir={workdir}", "--prompt=alpha beta", "--max_tokens=6",
               "--temperature=0")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("alpha beta")
