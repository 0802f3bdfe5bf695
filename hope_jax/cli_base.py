"""What every `hope-jax` sub-command shares: the command table, the usage error and the checks
of the common flags (--workdir, the sampling flags). `hope_jax/cli.py` registers the commands
and runs them; `hope_jax/cli_learn.py` adds `learn` and `--learn` through the same table.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from absl import flags

PROG = "hope-jax"


class UsageError(Exception):
    """A mistake in the command line or its inputs: one line on stderr, exit status 2."""


@dataclass(frozen=True)
class Command:
    """A sub-command: its one-line summary, usage line, flag names and entry point."""
    summary: str
    usage: str
    flags: tuple[str, ...]
    run: Callable[[flags.FlagValues, list[str]], None]


COMMANDS: dict[str, Command] = {}


def register(name: str, command: Command) -> None:
    """Adds a sub-command (`hope-jax <name>`)."""
    COMMANDS[name] = command


def enable_compilation_cache() -> None:
    """jax's persistent compilation cache (HOPE_JAX_COMPILATION_CACHE, default
    ~/.cache/hope_jax/jax_cache; empty = off): a second run skips most XLA compile time."""
    path = os.environ.get("HOPE_JAX_COMPILATION_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "hope_jax", "jax_cache"))
    if path:
        import jax
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def no_positional(positional: Sequence[str]) -> None:
    if positional:
        raise UsageError(f"unexpected arguments {list(positional)}")


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` (local, or remote such as gs://…) holds a finalised checkpoint step."""
    from hope_jax.train.checkpoint import committed_steps
    return bool(committed_steps(workdir))


def trained_workdir(fv: flags.FlagValues, command: str) -> str:
    """--workdir of a trained run (nothing is created when it is not one)."""
    workdir = fv.workdir
    if not workdir:
        raise UsageError(f"{command} needs --workdir (a trained run)")
    from hope_jax.data import storage
    workdir = storage.resolve(workdir)
    if not storage.is_remote(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir}: no such directory (train first: {PROG} train "
                         f"--workdir={workdir})")
    if not has_checkpoints(workdir):
        raise UsageError(f"--workdir={workdir}: no checkpoint in {workdir}/checkpoints (train "
                         f"first: {PROG} train --workdir={workdir})")
    return workdir


def sampling_settings(fv: flags.FlagValues, s) -> dict:
    pick = lambda flag, default: default if flag is None else flag
    out = dict(prompt=pick(fv.prompt, s.prompt), max_tokens=pick(fv.max_tokens, s.max_tokens),
               temperature=pick(fv.temperature, s.temperature), top_k=pick(fv.top_k, s.top_k),
               top_p=pick(fv.top_p, s.top_p), seed=pick(fv.seed, s.seed))
    checks = [(out["max_tokens"] >= 1, "--max_tokens must be ≥ 1"),
              (out["temperature"] >= 0, "--temperature must be ≥ 0 (0 = greedy)"),
              (out["top_k"] >= 0, "--top_k must be ≥ 0 (0 = off)"),
              (0 < out["top_p"] <= 1, "--top_p must be in (0, 1]")]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return out


__all__ = ["COMMANDS", "PROG", "Command", "UsageError", "enable_compilation_cache",
           "has_checkpoints", "no_positional", "register", "sampling_settings", "trained_workdir"]
