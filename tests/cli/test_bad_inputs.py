"""Every kind of bad input to `hope-jax` (the table in docs/training.md): one line
`hope-jax: error: …` on stderr, exit status 2, no traceback, and nothing created or changed on
disk. The CLI's main() runs in-process and every error fires before anything compiles; one tiny
trained workdir (2 checkpoints) serves the cases that need a run. Also: a same-size byte-flip in
the newest checkpoint is detected and the previous step is used; Ctrl-C stops like SIGTERM."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal

import numpy as np
import pytest

from hope_jax import cli
from hope_jax.train.checkpoint import Checkpointer, config_to_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config_factory():
    """tests/train/helpers.py's tiny_config (tests/cli is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_train_helpers", os.path.join(ROOT, "tests", "train", "helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_config


tiny_config = _tiny_config_factory()
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "eval")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny transformer trained 2 steps (checkpoints 1 and 2), its config file, bad files."""
    from hope_jax.train.loop import train
    root = tmp_path_factory.mktemp("cli")
    config = tiny_config(str(root), steps=2, checkpoint_every=1, keep_checkpoints=3)
    workdir = str(root / "run")
    train(config, workdir)
    (root / "config.json").write_text(json.dumps(config_to_json(config)))
    (root / "tiny.py").write_text(
        "import json\nfrom hope_jax.train.loop import config_from_dict\n"
        f"def get_config():\n"
        f"    return config_from_dict(json.load(open({str(root / 'config.json')!r})))\n")
    _write_bad_files(root)
    return dict(root=root, workdir=workdir, config=str(root / "tiny.py"))


def _write_bad_files(root) -> None:
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_text("")
    (bad / "shards.bin").write_bytes(b"\x00\x01" * 64)
    (bad / "random.txt").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096,
                                                                            dtype=np.uint8)))
    (bad / "broken.jsonl").write_text('{"text": "fine"}\n{"text": "cut\n{"text": "ok"}\n')
    (bad / "nofield.jsonl").write_text('{"body": "x"}\n')
    (bad / "syntax.py").write_text("def get_config(:\n")
    (bad / "config.txt").write_text("not python")
    (bad / "a_file").write_text("x")
    (bad / "nockpt").mkdir()
    (bad / "zs_broken.jsonl").write_text('{"text": "a b c"}\n{"text": \n')
    (bad / "zs_label.jsonl").write_text('{"ctx": "a", "endings": ["b", "c"], "label": 5}\n')
    (bad / "zs_format.jsonl").write_text('{"question": "?", "answer": "!"}\n')
    (bad / "piqa.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n' * 3)
    (bad / "piqa-labels.lst").write_text("0\n1\n")


def _files(root) -> dict[str, tuple[int, int]]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in files + dirs:
            p = os.path.join(d, name)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size if name in files else 0, st.st_mtime_ns)
    return out


def _main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hope-jax"] + argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


W, C = "{workdir}", "CONFIG"
FILES = "--config.data.files={root}/bad/"
# (arguments, a fragment of the message): the table of docs/training.md, in its order.
CASES = [
    (["bogus"], "unknown command 'bogus'"),
    (["train", "--config={root}/missing.py"], "no such file"),
    (["train", "--config={root}/bad"], "is a directory"),
    (["train", "--config={root}/bad/config.txt"], "expected a Python config file"),
    (["train", "--config={root}/bad/syntax.py"], "invalid syntax (syntax.py, line 1)"),
    (["train", "--config=experiments/configs/hope.py:huge"], "unknown size 'huge'"),
    (["train", "--config.optim.learning_rate=1"], "unknown key 'learning_rate'"),
    (["train", "--config.optim.lr=fast"], "could not convert string to float"),
    (["train", "--config.optim.lr=-1"], "config.optim.lr: must be > 0"),
    (["train", "--config.model.size=huge"], "config.model.size: expected one of"),
    (["train", "--config.model.num_heads=3"], "heads, which do not divide"),
    (["train", "--config.mesh.data=3"], "config.mesh"),
    (["train", "--prompt=hi"], "a flag of `hope-jax generate`"),
    (["train", "--nosuchflag=1"], "has no such flag"),
    (["train", "extra"], "unexpected arguments ['extra']"),
    (["train", C, FILES + "missing.txt"], "does not exist"),
    (["train", C, "--config.data.files={root}/bad"], "is a directory"),
    (["train", C, FILES + "*.nothing"], "no file matches"),
    (["train", C, FILES + "empty.txt"], "is empty"),
    (["train", C, FILES + "shards.bin"], "unsupported suffix '.bin'"),
    (["train", C, FILES + "random.txt"], "is not UTF-8 text: byte 0x"),
    (["train", C, FILES + "broken.jsonl"], "broken.jsonl:2: not valid JSON"),
    (["train", C, FILES + "nofield.jsonl"], "nofield.jsonl:1: no field 'text'"),
    (["train", C, "--workdir={root}/bad/a_file"], "exists and is not a directory"),
    (["train", C, "--workdir={root}/bad/a_file/run"], "is a file, not a directory"),
    (["train", C, "--config.data.seq_len=32", "--workdir=" + W],
     "data.seq_len: saved 16 vs now 32"),
    (["train", C, "--config.train.init_from={root}/bad/nockpt"], "train.init_from"),
    (["generate"], "generate needs --workdir"),
    (["generate", "--workdir={root}/typo"], "no such directory"),
    (["generate", "--workdir={root}/bad/nockpt"], "no checkpoint in"),
    (["generate", "--workdir=" + W, "--top_p=2"], "--top_p must be in (0, 1]"),
    (["generate", "--workdir=" + W, "--max_tokens=0"], "--max_tokens must be ≥ 1"),
    (["generate", "--workdir=" + W, "--config.optim.lr=1"], "has no such flag"),
    (["eval", "--workdir=" + W, "--tasks=perplexity"], "--tasks: unknown ['perplexity']"),
    (["eval", "--workdir=" + W, "--tasks=zero_shot"], "needs --zero_shot"),
    (["eval", "--workdir=" + W, "--zero_shot={root}/none.jsonl"], "no such file"),
    (["eval", "--workdir=" + W, "--zero_shot={root}/bad/zs_broken.jsonl"],
     "zs_broken.jsonl:2: not valid JSON"),
    (["eval", "--workdir=" + W, "--zero_shot={root}/bad/zs_label.jsonl"],
     "zs_label.jsonl:1: label 5 is out of range for 2 choices"),
    (["eval", "--workdir=" + W, "--zero_shot={root}/bad/zs_format.jsonl"],
     "unknown zero-shot format"),
    (["eval", "--workdir=" + W, "--zero_shot={root}/bad/piqa.jsonl"],
     "2 labels for the 3 examples"),
    (["eval", "--workdir=" + W, "--niah_lengths=64"], "lengths must be ≥ 2"),
    (["eval", "--workdir=" + W, "--niah_lengths=abc"], "invalid literal for int()"),
    (["eval", "--workdir=" + W, "--niah_depths=1.5"], "fractions in [0, 1]"),
    (["eval", "--workdir=" + W, "--niah_task=haystack"], "--niah_task=haystack"),
    (["eval", "--workdir=" + W, "--eval_batches=0"], "--eval_batches must be ≥ 1"),
    (["data", "prepar"], "usage: hope-jax data prepare"),
    (["train", C, "--config.data.prepared_dir={root}/bad/missing"],
     "prepared data directory {root}/bad/missing does not exist"),
    (["train", C, "--config.data.prepared_dir={root}/bad/nockpt"], "holds no prepared shards"),
    (["data", "prepare", C, "--config.data.prepared_dir={root}/bad"],
     "exists and is not a prepared-shards directory"),
    (["train", C, "--config.data.tokenizer=bpe", "--config.data.tokenizer_path={root}/none.model"],
     "cannot read the sentencepiece model"),
    (["train", C, "--config.data.tokenizer=bpe", "--config.data.tokenizer_path={root}/bad/a_file"],
     "is not a sentencepiece model"),
    (["train", C, "--config.data.tokenizer_path={root}/bad/a_file"],
     "a sentencepiece model needs data.tokenizer='bpe'"),
    (["train", C, "--config.model.arch=hope", "--config.model.cms_objective=next_token",
      "--config.data.seq_len=60"],
     "needs a multiple of the in-context CMS chunk 8, got 60"),
    (["train", C, "--config.model.cms_objective=next_token", "--config.model.arch=transformer"],
     "'next_token' needs a Hope arch with its CMS"),
]


def test_bad_inputs_one_line_exit_2_nothing_changed(run, capsys, monkeypatch):
    """All cases in one process: exit 2, exactly one stderr line naming the problem, no
    traceback, and the tree of files (trained run, corpus cache, bad files) is unchanged."""
    monkeypatch.setenv("HOPE_JAX_COMPILATION_CACHE", "")  # keep the tests' cache settings
    monkeypatch.chdir(ROOT)
    root = run["root"]
    before = _files(root)
    failures = []
    for argv, fragment in CASES:
        args = [f"--config={run['config']}" if a == C else a for a in argv]
        args = [a.format(root=root, workdir=run["workdir"]) for a in args]
        code, out, err = _main(args, capsys)
        lines = err.strip().splitlines()
        fragment = fragment.format(root=root)
        ok = (code == 2 and len(lines) == 1 and lines[0].startswith("hope-jax: error: ")
              and fragment in lines[0] and "Traceback" not in err)
        if not ok:
            failures.append((argv, code, err[-600:]))
        after = _files(root)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))[:4]
            failures.append((argv, "changed files", changed))
            before = after
    assert not failures, "\n".join(map(str, failures))
    assert len(CASES) >= 30


@pytest.mark.parametrize("argv", [["train", "--help"], ["eval", "-h"], ["generate", "--help"],
                                  ["data", "--help"], ["--help"]])
def test_help_on_stdout_lists_the_flags(argv, capsys):
    code, out, err = _main(argv, capsys)
    assert code == 0 and not err
    assert "usage: hope-jax" in out and "--workdir" in out or "--config" in out


def test_debug_shows_the_traceback(run, capsys):
    with pytest.raises(cli.UsageError, match="no such directory"):
        cli.main(["hope-jax", "generate", f"--workdir={run['root']}/typo", "--debug"])


def _flip_bytes(step_dir: str, count: int = 64) -> str:
    """Flips `count` bytes in the middle of the largest params data file (same size)."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "params"))
             for f in fs]
    target = max(files, key=os.path.getsize)
    data = bytearray(open(target, "rb").read())
    mid = len(data) // 2
    for i in range(mid, mid + count):
        data[i] ^= 0xFF
    size = os.path.getsize(target)
    with open(target, "wb") as f:
        f.write(data)
    assert os.path.getsize(target) == size
    return target


def _swap_params(checkpoints: str) -> None:
    """Step 2's params files replaced by step 1's: files orbax reads without complaint, holding
    other values than step 2's checksums describe."""
    step1, step2 = (os.path.join(checkpoints, s, "params") for s in ("1", "2"))
    shutil.rmtree(step2)
    shutil.copytree(step1, step2)


# What notices the damage: 64 flipped bytes in the middle of the largest data file land in
# whichever array orbax packed there (the order varies from run to run); TensorStore then fails
# to decode that chunk, or decodes other values and the checksums differ. The swapped files
# always decode, so only the checksums can tell.
DAMAGE = {"byte_flip": r"(CorruptCheckpointError: checksum mismatch|Exception: Encountered error "
                       r"while reading array)",
          "swapped_files": r"CorruptCheckpointError: checksum mismatch in params"}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back(run, tmp_path, capfd, caplog, damage):
    """Step 2 damaged with its file sizes unchanged (64 flipped bytes, or another step's files):
    readers skip it for step 1 with a one-line warning (nothing moved); a resuming run moves it
    aside to 2.corrupt (never deleted)."""
    from hope_jax.train import build_trainer, build_mesh
    from hope_jax.train.loop import load_for_inference
    workdir = str(tmp_path / "run")
    shutil.copytree(run["workdir"], workdir)
    if damage == "byte_flip":
        _flip_bytes(os.path.join(workdir, "checkpoints", "2"))
    else:
        _swap_params(os.path.join(workdir, "checkpoints"))
    capfd.readouterr()
    load_for_inference(workdir)
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err[-2000:]
    warned = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warned) == 1 and "step 2 is damaged (" in warned[0], warned
    assert re.search(DAMAGE[damage], warned[0]), warned
    assert "Traceback" in open(os.path.join(workdir, "restore.log")).read()
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))

    config = tiny_config(str(run["root"]), steps=2, checkpoint_every=1, keep_checkpoints=3)
    trainer = build_trainer(config, 260, build_mesh(config.mesh), pad_id=0)
    ck = Checkpointer(workdir)
    state, _, step = ck.restore(trainer.abstract_state, config, 260)
    ck.close()
    assert step == 1 and int(state.step) == 1
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2.corrupt"))
    assert Checkpointer(workdir).steps() == [1]


def test_ctrl_c_stops_like_sigterm_and_twice_aborts():
    """The first SIGINT only sets the flag (the loop then checkpoints and stops); the second
    goes to Python's handler (KeyboardInterrupt); the handlers are restored afterwards."""
    from hope_jax.train.loop import _StopFlag
    # Python's own handler as the one to fall back to: a test worker may inherit another
    # (e.g. SIG_IGN after an earlier test's subprocess handling), which made this order-dependent.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _StopFlag(announce=False) as flag:
            os.kill(os.getpid(), signal.SIGINT)
            assert flag.raised and flag.name == "sigint"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
