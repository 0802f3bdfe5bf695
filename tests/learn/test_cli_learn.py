"""`hope-jax learn` / `--learn`: registered, and bad input is one `hope-jax: error:` line, exit 2
(in-process, before any model is loaded)."""
from __future__ import annotations

import os

import pytest

from hope_jax import cli


def _run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(["hope-jax", *args])
    return e.value.code, capsys.readouterr()


def test_learn_is_registered_with_its_flags(capsys):
    code, out = _run(capsys, "learn", "--help")
    assert code == 0 and "--learn_groups" in out.out and "--out" in out.out
    assert "learn" in cli.COMMANDS["eval"].flags and "learn" in cli.COMMANDS["generate"].flags


@pytest.mark.parametrize("args, message", [
    (["--workdir=/no/such/run", "--data=x", "--out=y"], "no such directory"),
    (["--workdir={run}", "--out={run}/new"], "learn needs --data"),
    (["--workdir={run}", "--data=x"], "learn needs --out"),
    (["--workdir={run}", "--data=x", "--out={run}"], "--out must be a new directory"),
    (["--workdir={run}", "--data=x", "--out={run}/new", "--heldout_windows=0"],
     "--heldout_windows must be"),
    (["--workdir={run}", "--data=x", "--out={run}/n", "--top_k=3"], "has no such flag"),
])
def test_bad_learn_command_lines(tmp_path, capsys, args, message):
    os.makedirs(tmp_path / "checkpoints" / "10")
    args = [a.format(run=tmp_path) for a in args]
    code, out = _run(capsys, "learn", *args)
    assert code == 2
    assert out.err.startswith("hope-jax: error: ") and message in out.err, out.err
    assert len(out.err.strip().splitlines()) == 1
