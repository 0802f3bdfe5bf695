"""`hope-jax`: the command line.

    hope-jax train    --config=experiments/configs/hope.py:tiny [--config.optim.lr=1e-3 …]
                      --workdir=DIR
    hope-jax eval     --workdir=DIR [--tasks=bpb,niah,memorization,mqar,zero_shot]
                      [--zero_shot=FILE.jsonl,…]
    hope-jax generate --workdir=DIR [--prompt=TEXT] [--max_tokens=N] [--temperature=T] [--top_k=K]
                      [--top_p=P]
    hope-jax data prepare --config=…    (download, tokenize and cache the corpus; runs once)
    hope-jax data prepare --config=… --config.data.prepared_dir=DIR   (ArrayRecord shards in DIR,
                                        tokenized in parallel, read by train on every host)
    hope-jax <command> --help           (that command's flags)

Without --config the embedded default is used (`hope_jax.config.default_config()`: a tiny Hope on
the pip-only English corpus). A mistake in the command line or in its inputs (config, data files,
workdir, checkpoints, evaluation files) is reported in one line, `hope-jax: error: …`, with exit
status 2, before anything compiles where it can be, and without creating or changing files;
`--debug` shows the traceback instead.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from hope_jax import cli_learn
from hope_jax.cli_base import (COMMANDS, PROG, Command, UsageError, enable_compilation_cache,
                               has_checkpoints, no_positional, register, sampling_settings,
                               trained_workdir)
from hope_jax.config import ConfigError, validate

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "config", "experiments.py")
HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")
# Errors about the user's inputs: their message alone is the report.
_USER_ERRORS = ("UsageError", "ConfigError", "IncompatibleCheckpointError",
                "UnrestorableCheckpointError", "CorruptCheckpointError", "NonFiniteTrainingError",
                "ZeroShotFileError")
_NOTES: list[str] = []   # appended to an error's line (e.g. where partial results are)


# ------------------------------------------------------------------------------- flags
def _define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    """Every flag, on a fresh FlagValues (so main() can run many times in one process).
    config_flags reads argv's --config.* overrides here, so unknown keys must have been rejected
    before (see `_unknown_override`)."""
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config FILE[:ARG] "
                                    "(default: the embedded tiny Hope).", flag_values=fv,
                                    lock_config=True, sys_argv=list(argv))
    s, i, f, lst = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_list
    s("workdir", None, "Run directory: checkpoints, TensorBoard logs, plots (train default: "
      "workdirs/<arch>-<size>).", flag_values=fv)
    s("prompt", None, "Prompt text (default config.sample.prompt).", flag_values=fv)
    i("max_tokens", None, "Tokens to sample (default config.sample.max_tokens).", flag_values=fv)
    f("temperature", None, "Softmax temperature, 0 = greedy.", flag_values=fv)
    i("top_k", None, "Keep the k most likely tokens (0 = off).", flag_values=fv)
    f("top_p", None, "Nucleus sampling mass (1 = off).", flag_values=fv)
    i("seed", None, "Random seed.", flag_values=fv)
    lst("tasks", ["bpb", "niah", "memorization"], f"Tasks among {', '.join(EVAL_TASKS)}.",
        flag_values=fv)
    lst("zero_shot", [], "jsonl files: LAMBADA {text}, HellaSwag {ctx, endings, label}, PIQA "
        "{goal, sol1, sol2[, label]} (official PIQA: NAME-labels.lst beside NAME.jsonl).",
        flag_values=fv)
    lst("niah_lengths", [], "NIAH prompt lengths in tokens (default: three powers of two that "
        "fit the tokenizer's prompt scaffolding).", flag_values=fv)
    lst("niah_depths", ["0.1", "0.5", "0.9"], "NIAH needle depths in [0, 1].", flag_values=fv)
    s("niah_task", "passkey", "NIAH task: passkey | number | uuid.", flag_values=fv)
    i("niah_samples", 8, "Prompts per NIAH cell.", flag_values=fv)
    i("eval_batches", None, "bpb: held-out windows = eval_batches × train.global_batch, strided "
      "over the whole held-out split (default train.eval_batches: the trainer's windows).",
      flag_values=fv)
    i("mqar_steps", 300, "MQAR training steps (a fresh model of the checkpoint's architecture).",
      flag_values=fv)
    i("probe_windows", 16, "memory: seeded random held-out windows per probed length (1×, 4×, "
      "16× the training length).", flag_values=fv)
    flags.DEFINE_bool("debug", False, "Show the traceback of an error.", flag_values=fv)
    cli_learn.define_flags(fv)  # learn / --learn flags (hope_jax/cli_learn.py)


def _flag_names(args: Sequence[str]) -> list[tuple[str, str]]:
    """(argument, flag name) of every --flag argument."""
    out = []
    for arg in args:
        if arg.startswith("-") and arg not in ("-", "--"):
            name = arg.lstrip("-").split("=", 1)[0]
            out.append((arg, "config" if name.startswith("config.") else name))
    return out


def _check_flag_names(name: str, args: Sequence[str]) -> None:
    """A flag another command takes (or no command) is an error here, not silently ignored."""
    own = set(COMMANDS[name].flags) | {"debug"}
    for arg, flag in _flag_names(args):
        bare = flag[2:] if flag.startswith("no") and flag[2:] in own else flag
        if bare in own:
            continue
        users = [c for c, cmd in COMMANDS.items() if bare in cmd.flags]
        where = f" (a flag of `{PROG} {'` / `'.join(users)}`)" if users else ""
        raise UsageError(f"{arg.split('=', 1)[0]}: `{PROG} {name}` has no such flag{where}; "
                         f"its flags: {', '.join('--' + f for f in COMMANDS[name].flags)}")


def _unknown_override(args: Sequence[str]) -> str | None:
    """Names the first `--config.a.b=…` whose key is not in the schema."""
    from hope_jax.config import default_config
    for arg in args:
        if not arg.startswith("--config."):
            continue
        node, path = default_config(), arg[2:].split("=", 1)[0].split(".")[1:]
        for i, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node:
                group = ".".join(["config"] + path[:i])
                known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else ""
                return (f"--{'.'.join(['config'] + path)}: unknown key {key!r} in {group}"
                        + (f" (known: {known})" if known else ""))
            node = node[key]
    return None


def _check_config_file(args: Sequence[str]) -> None:
    """--config=FILE[:ARG] must name an existing .py file."""
    for arg in args:
        if arg.startswith(("--config=", "-config=")):
            value = arg.split("=", 1)[1]
            path = value.split(":", 1)[0]
            if not os.path.isfile(path):
                what = "is a directory" if os.path.isdir(path) else "no such file"
                raise UsageError(f"--config={value}: {what} {path!r}")
            if not path.endswith(".py"):
                raise UsageError(f"--config={value}: expected a Python config file (.py) "
                                 "with get_config()")


def _flag_error(err: BaseException) -> str:
    """absl's message, or for a config file that raised, the file and its error's last line."""
    text = str(err)
    if "Traceback" not in text:
        return _one_line(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    places = [ln for ln in lines if ln.startswith("File ") and "site-packages" not in ln]
    where = f" ({places[-1]})" if places else ""
    flag = text.split(":", 1)[0].replace("flag ", "")
    return f"{flag}: the config file raised {lines[-1]}{where}"


def _parse(name: str, rest: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
    """The parsed flags of `hope-jax <name> rest…` and the positional arguments."""
    argv = [f"{PROG} {name}"] + list(rest)
    _check_flag_names(name, rest)
    unknown = _unknown_override(argv)
    if unknown:
        raise UsageError(unknown)
    _check_config_file(rest)
    fv = flags.FlagValues()
    _define_flags(fv, argv)
    try:
        positional = fv(argv)
    except flags.Error as err:  # e.g. --config.optim.lr=fast, a config file that raised
        raise UsageError(_flag_error(err)) from None
    except (AttributeError, KeyError) as err:  # an override of a key the config does not have
        raise UsageError(_unknown_override(argv) or f"bad --config override ({err})") from None
    except Exception as err:  # the config file itself raised
        raise UsageError(f"--config: {_one_line(err)}") from err
    if not flags.FLAGS.is_parsed():  # grain reads absl's global flags
        flags.FLAGS.mark_as_parsed()
    return fv, positional[1:]


# ------------------------------------------------------------------------------- help
def _command_help(name: str) -> str:
    cmd = COMMANDS[name]
    fv = flags.FlagValues()
    _define_flags(fv, [PROG])
    lines = [f"usage: {cmd.usage}", "", cmd.summary, "", "flags:"]
    for flag in cmd.flags + ("debug",):
        f = fv[flag]
        default = "" if f.default in (None, [], "") or flag == "config" else \
            f" (default: {f.default_as_str.strip(chr(39))})"
        lines.append(f"  --{flag:<14s} {f.help}{default}")
        if flag == "config":
            lines.append("  --config.GROUP.KEY=VALUE  one setting (every key and its meaning: "
                         "hope_jax/config/defaults.py)")
    return "\n".join(lines)


def _top_help() -> str:
    parts = [__doc__.strip(), "", "commands:"]
    parts += [f"  {n:<9s} {c.summary}" for n, c in COMMANDS.items()]
    for n in COMMANDS:
        parts += ["", _command_help(n)]
    return "\n".join(parts)


# ------------------------------------------------------------------------------- errors
def _one_line(err: BaseException | str) -> str:
    """An error message on one line (a list of problems joined with '; '), shortened."""
    text = str(err)
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__ if not isinstance(err, str) else ""
    head = lines[0] + (" " if lines[0].endswith(":") else "; ") + "; ".join(lines[1:]) \
        if len(lines) > 1 else lines[0]
    return head if len(head) <= 700 else head[:697] + "..."


def _describe(err: BaseException) -> str:
    """The report of an error: its message for a user's mistake, else the type too."""
    message = _one_line(err)
    if type(err).__name__ in _USER_ERRORS or isinstance(err, (OSError, ValueError, ConfigError)):
        return message
    return (f"{type(err).__name__}: {message} (unexpected: run again with --debug for the "
            "traceback)")


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """`hope-jax <command> [flags]`. Errors: one line on stderr and exit status 2 (--debug:
    the traceback); Ctrl-C outside a training loop: exit status 130."""
    global _STANDALONE
    _STANDALONE = argv is None
    argv = list(sys.argv if argv is None else argv)
    debug = "--debug" in argv[1:]
    _NOTES.clear()
    try:
        _main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(" ".join([f"{PROG}: interrupted"] + _NOTES), file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # every error of a command is reported in one line
        if debug:
            raise
        _fail(" ".join([_describe(err)] + _NOTES))


def _main(argv: list[str]) -> None:
    args = argv[1:]
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    if args[0] in HELP_ARGS + ("help",):
        print(_top_help())
        sys.exit(0)
    name = args[0]
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}; expected one of {', '.join(COMMANDS)} "
                         f"(`{PROG} --help` lists them)")
    if any(a in HELP_ARGS for a in args[1:]):
        print(_command_help(name))
        sys.exit(0)
    fv, positional = _parse(name, args[1:])
    if _STANDALONE:
        _plain_warnings()
    COMMANDS[name].run(fv, positional)


_STANDALONE = False   # main() called as the program (argv from sys.argv), not by a caller


def _plain_warnings() -> None:
    """The library's logged warnings (a damaged checkpoint step, …) as `hope-jax: warning: …`
    lines on stderr, instead of the root logger's format (once per process; only when run as
    the program, so a caller's logging set-up is left alone)."""
    import logging
    logger = logging.getLogger("hope_jax")
    if any(getattr(h, "_hope_jax_cli", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"{PROG}: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    handler._hope_jax_cli = True
    logger.addHandler(handler)
    logger.propagate = False


# ------------------------------------------------------------------------------- helpers
def _validated(config):
    import jax
    validate(config, device_count=jax.device_count(), process_count=jax.process_count())
    return config


def _is_main() -> bool:
    import jax
    return jax.process_index() == 0


def _writable_parent(path: str) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--workdir={path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--workdir={path}: cannot create it, {parent} is not writable")



# ------------------------------------------------------------------------------- train
def _check_train_inputs(config, workdir: str) -> None:
    """Checks that need no compilation: the workdir, the data files, a warm start, and an
    existing run's checkpoints (their shape keys must match: IncompatibleCheckpointError)."""
    from hope_jax.data import storage
    if not storage.is_remote(workdir):  # a bucket's permissions show at the first write
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise UsageError(f"--workdir={workdir} exists and is not a directory")
        _writable_parent(workdir)
    _check_data_files(config.data)
    init_from = str(config.train.get("init_from", "") or "")
    if init_from and not has_checkpoints(os.path.expanduser(init_from)):
        raise UsageError(f"config.train.init_from={init_from}: no checkpoint in "
                         f"{os.path.join(init_from, 'checkpoints')}")
    if has_checkpoints(workdir):
        from hope_jax.train.checkpoint import (IncompatibleCheckpointError, config_to_json,
                                               shape_differences)
        from hope_jax.train.loop import read_run_config
        saved, step = read_run_config(workdir)
        diffs = shape_differences(config_to_json(saved), config)
        if diffs:
            lines = "; ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
            raise IncompatibleCheckpointError(
                f"{workdir} holds checkpoints (step {step}) of a different model/data shape "
                f"({lines}); use a new --workdir, or the config it was trained with")


def _check_data_files(data_config) -> None:
    """The user's data files: cheap checks always; when the corpus is not prepared yet, every
    document is read too (bad UTF-8, bad jsonl lines), so prepare() fails on nothing."""
    if data_config.prepared_dir:  # train reads the shards there, not the corpus
        _check_prepared(data_config.prepared_dir)
        return
    if data_config.corpus != "files" or not data_config.files:
        return
    from hope_jax.data.cache_key import cache_key
    from hope_jax.data.user_files import check_files, read_user_documents
    files = list(data_config.files)
    check_files(files)
    key = cache_key(data_config)
    cache = os.path.abspath(os.path.expanduser(data_config.cache_dir))
    entry = os.path.join(cache, "prepared", f"files-{data_config.tokenizer}-{key[:16]}")
    if not os.path.exists(os.path.join(entry, "manifest.json")):
        for _ in read_user_documents(files, data_config.text_field):
            pass


def _check_prepared(prepared_dir: str) -> None:
    """config.data.prepared_dir must hold complete shards (index, shard sizes, tokenizer)."""
    from hope_jax.data.shard_reader import open_prepared
    try:
        open_prepared(prepared_dir)
    except (OSError, ValueError) as err:
        raise UsageError(f"config.data.prepared_dir={prepared_dir}: {_one_line(err)}") from None


def cmd_train(fv: flags.FlagValues, positional: list[str]) -> None:
    no_positional(positional)
    config = fv.config
    if config.distributed.enabled:  # before any other jax call (device counts need it)
        from hope_jax.train import maybe_initialize
        maybe_initialize(config.distributed)
    config = _validated(config)
    workdir = fv.workdir or os.path.join("workdirs", f"{config.model.arch}-{config.model.size}")
    _check_train_inputs(config, workdir)
    enable_compilation_cache()
    if config.model.cms_objective == "next_token":
        import hope_jax.learn  # noqa: F401  (registers the objective with the trainer)
    from hope_jax.train import train
    result = train(config, workdir)
    if _is_main():
        _report_training(result, workdir)


def _report_training(result: dict, workdir: str) -> None:
    from hope_jax.data import storage
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str, list))}
    workdir = storage.resolve(workdir)
    storage.write_text(storage.join(workdir, "result.json"), json.dumps(summary, indent=1))
    bpb, ci = result.get("bpb"), result.get("bpb_ci95")
    held = "n/a" if bpb is None else f"{float(bpb):.4f}"
    if ci and all(x == x for x in ci):
        held += f" (95% interval {ci[0]:.3f}–{ci[1]:.3f})"
    print(f"step {result.get('step')}: training loss {result.get('loss', float('nan')):.4f}, "
          f"held-out bits per byte {held}, {result.get('tokens_per_s', 0):,.0f} tokens/s "
          f"({result.get('stopped')}); summary in {os.path.join(workdir, 'result.json')}")


# ------------------------------------------------------------------------------- data
def cmd_data(fv: flags.FlagValues, positional: list[str]) -> None:
    if list(positional) != ["prepare"]:
        raise UsageError(f"usage: {PROG} data prepare --config=FILE[:ARG]")
    config = _validated(fv.config)
    from hope_jax import data
    t0 = time.perf_counter()
    if config.data.prepared_dir:  # ArrayRecord shards, written once for every host
        if config.data.corpus == "files" and config.data.files:
            from hope_jax.data.user_files import check_files
            check_files(list(config.data.files))  # cheap; a bad document fails the stream
        from hope_jax.data.shard_reader import PreparedDirError
        try:
            prepared = data.prepare_shards(config.data, progress=True)
        except PreparedDirError as err:
            raise UsageError(f"config.data.prepared_dir={config.data.prepared_dir}: "
                             f"{_one_line(err)}") from None
    else:
        _check_data_files(config.data)
        prepared = data.prepare(config.data, progress=True)
    print(f"prepared {config.data.corpus} ({config.data.tokenizer} tokenizer, vocabulary "
          f"{prepared.tokenizer.vocab_size}) in {time.perf_counter() - t0:.1f} s: {prepared.root}")
    for name, split in prepared.splits.items():
        print(f"  {name:6s} {split.documents:6d} documents {split.tokens:12,d} tokens "
              f"{split.bytes:12,d} bytes")


# ------------------------------------------------------------------------------- generate
def cmd_generate(fv: flags.FlagValues, positional: list[str]) -> None:
    no_positional(positional)
    workdir = trained_workdir(fv, "generate")
    from hope_jax.config import default_config
    sampling_settings(fv, default_config().sample)   # flag ranges, before loading anything
    enable_compilation_cache()
    import jax
    import numpy as np
    from hope_jax.sampling import generate
    from hope_jax.train import load_for_inference
    model, tok, config = load_for_inference(workdir)
    s = sampling_settings(fv, config.sample)
    ids = np.asarray(tok.encode(s["prompt"]), np.int32)
    if ids.size == 0:
        ids = np.asarray([tok.bos_id], np.int32)
    out = generate(model, ids[None], s["max_tokens"], jax.random.PRNGKey(s["seed"]),
                   temperature=s["temperature"], top_k=s["top_k"], top_p=s["top_p"])
    print(s["prompt"] + tok.decode(np.asarray(out[0])))


# ------------------------------------------------------------------------------- eval
def _documents(prepared, split: str, limit: int):
    """The first `limit` documents of a split as token arrays (from the shard's offsets)."""
    return prepared.documents(split, limit)


def _eval_plan(fv: flags.FlagValues) -> dict:
    """The evaluation flags, checked (no model or data needed)."""
    from hope_jax.eval.niah import TASKS
    tasks = [t for t in fv.tasks if t]
    unknown = sorted(set(tasks) - set(EVAL_TASKS))
    if unknown or not tasks:
        raise UsageError(f"--tasks: unknown {unknown}; expected some of {EVAL_TASKS}")
    if "zero_shot" in tasks and not fv.zero_shot:
        raise UsageError("--tasks=zero_shot needs --zero_shot=FILE.jsonl[,FILE…]")
    try:
        lengths = [int(x) for x in fv.niah_lengths]
        depths = [float(x) for x in fv.niah_depths]
    except ValueError as err:
        raise UsageError(f"--niah_lengths / --niah_depths: {err}") from None
    if any(n < 1 for n in lengths) or not depths or any(not 0 <= d <= 1 for d in depths):
        raise UsageError("--niah_lengths must be positive token counts and --niah_depths "
                         "fractions in [0, 1]")
    if fv.niah_task not in TASKS:
        raise UsageError(f"--niah_task={fv.niah_task}: expected one of {TASKS}")
    for flag in ("niah_samples", "mqar_steps", "eval_batches", "probe_windows"):
        if fv[flag].value is not None and fv[flag].value < 1:
            raise UsageError(f"--{flag} must be ≥ 1, got {fv[flag].value}")
    zero_shot = {}
    if "zero_shot" in tasks or fv.zero_shot:
        from hope_jax.eval.zero_shot import load_examples
        for path in fv.zero_shot:
            if not os.path.isfile(path):
                raise UsageError(f"--zero_shot: no such file {path}")
            zero_shot[path] = load_examples(path)
        tasks = list(dict.fromkeys(tasks + ["zero_shot"]))
    return dict(tasks=tasks, lengths=lengths, depths=depths, zero_shot=zero_shot)


def _niah_lengths(plan: dict, tok, task: str) -> tuple[list[int], bool]:
    """The NIAH lengths (default: ones that fit this tokenizer) and whether RULER's
    instruction line fits; too short a length is an error naming the minimum."""
    from hope_jax.eval.niah import default_lengths, scaffold_tokens
    if not plan["lengths"]:
        return default_lengths(tok, task)
    need = scaffold_tokens(tok, task, instruction=False) + 1
    if min(plan["lengths"]) < need:
        raise UsageError(f"--niah_lengths: {min(plan['lengths'])} tokens is too short for this "
                         f"model's tokenizer: the NIAH prompt scaffolding and needle take "
                         f"{need - 1} tokens, so lengths must be ≥ {need}")
    return plan["lengths"], min(plan["lengths"]) >= scaffold_tokens(tok, task) + 32


class _Results:
    """eval/results.json (this run) and eval/runs/<start time>.json, rewritten after each task
    so computed results are never lost; earlier runs stay in eval/runs/."""

    def __init__(self, workdir: str, header: dict):
        self.dir = os.path.join(workdir, "eval")
        self.started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.data = dict(header, started=self.started, completed=[])
        self.path = os.path.join(self.dir, "results.json")
        self.run_path = os.path.join(self.dir, "runs", f"{self.started}.json")

    def _keep_previous(self) -> None:
        """A results.json from before eval/runs/ existed is copied there once."""
        from hope_jax.data import storage
        if storage.exists(self.path):
            old = json.loads(storage.read_text(self.path))
            stamp = old.get("started") or (
                "earlier" if storage.is_remote(self.path) else time.strftime(
                    "%Y%m%dT%H%M%SZ", time.gmtime(os.path.getmtime(self.path))))
            keep = os.path.join(self.dir, "runs", f"{stamp}.json")
            if not storage.exists(keep):
                _write_json(keep, old)

    def add(self, task: str, value) -> None:
        if not self.data["completed"]:
            self._keep_previous()
        self.data[task] = value
        self.data["completed"].append(task)
        for path in (self.run_path, self.path):
            _write_json(path, self.data)
        if len(_NOTES) == 0:
            _NOTES.append(f"(results of the completed tasks: {self.path})")


def _write_json(path: str, obj) -> None:
    from hope_jax.data import storage
    storage.write_text(path, json.dumps(obj, indent=1, default=float))


def cmd_eval(fv: flags.FlagValues, positional: list[str]) -> None:
    no_positional(positional)
    workdir = trained_workdir(fv, "eval")
    plan = _eval_plan(fv)
    from hope_jax import data
    from hope_jax.train.loop import read_run_config
    config, _ = read_run_config(workdir)
    prepared = data.prepare(config.data, progress=False)
    tok = prepared.tokenizer
    if "niah" in plan["tasks"]:
        plan["lengths"], plan["instruction"] = _niah_lengths(plan, tok, fv.niah_task)
    enable_compilation_cache()
    from hope_jax.train import load_for_inference
    model, tok, config = load_for_inference(workdir)
    results = _Results(workdir, {"workdir": workdir,
                                 "model": f"{config.model.arch}-{config.model.size}"})
    for task in plan["tasks"]:
        _EVAL_RUNNERS[task](fv, plan, model, tok, config, prepared, results)
    print(f"results: {results.path} (this run also in {results.run_path})")


def _eval_bpb(fv, plan, model, tok, config, prepared, results) -> None:
    import numpy as np
    from hope_jax import data
    from hope_jax.eval import bits_per_byte
    T, G = int(config.data.seq_len), int(config.train.global_batch)
    windows = int(fv.eval_batches or config.train.eval_batches) * G
    batches = data.eval_batches(prepared, "valid", seq_len=T, batch_size=min(G, 8),
                                windows=windows)
    r = bits_per_byte(model, batches, np.asarray(tok.token_bytes()), progress=True)
    r.update(windows=windows, seq_len=T, selection="strided evenly over the whole held-out split")
    results.add("bpb", r)
    print(f"held-out bits per byte {r['bpb']:.4f}, 95% interval {r['bpb_ci95'][0]:.3f}–"
          f"{r['bpb_ci95'][1]:.3f} ({r['units']} windows of {T} tokens strided over the "
          f"held-out split; perplexity per token {r['ppl']:.2f})")


def _eval_niah(fv, plan, model, tok, config, prepared, results) -> None:
    import numpy as np
    from hope_jax.eval import niah_grid
    lengths, depths = plan["lengths"], plan["depths"]
    grid = niah_grid(model, tok, lengths, depths, task=fv.niah_task,
                     n_samples=fv.niah_samples, seed=fv.seed or 0, progress=True,
                     instruction=plan["instruction"])
    results.add("niah", dict(task=fv.niah_task, lengths=lengths, depths=depths,
                             instruction=plan["instruction"],
                             accuracy=np.asarray(grid).tolist()))
    print(f"NIAH ({fv.niah_task}) accuracy, rows = lengths {lengths}, columns = depths "
          f"{depths}:\n{np.asarray(grid).round(2)}")


def _eval_memorization(fv, plan, model, tok, config, prepared, results) -> None:
    import numpy as np
    from hope_jax.eval import memorization_bpb
    docs = _documents(prepared, "valid", 8)
    m = memorization_bpb(model, docs, np.asarray(tok.token_bytes()),
                         chunk_len=int(config.data.seq_len), progress=True)
    results.add("memorization", m)
    print(f"test-time memorisation: bpb {m['off']['bpb']:.4f} (memory reset per document) "
          f"vs {m['on']['bpb']:.4f} (carried across documents): gain {m['gain']:+.4f} "
          f"(95% interval {m['gain_ci95'][0]:+.4f} … {m['gain_ci95'][1]:+.4f}, "
          f"{m['documents']} documents)")


def _eval_mqar(fv, plan, model, tok, config, prepared, results) -> None:
    from hope_jax.config import decoder_config
    from hope_jax.eval import train_mqar
    _, res = train_mqar(decoder_config(config, 256), steps=fv.mqar_steps, seed=fv.seed or 0,
                        progress=True)
    results.add("mqar", dict(accuracy=res["accuracy"], final_loss=float(res["losses"][-1]),
                             steps=fv.mqar_steps))
    print(f"MQAR accuracy {res['accuracy']:.3f} after {fv.mqar_steps} steps")


def _eval_zero_shot(fv, plan, model, tok, config, prepared, results) -> None:
    from hope_jax.eval import zero_shot as zs
    scores = {}
    for path, (fmt, examples) in plan["zero_shot"].items():
        if fmt == "lambada":
            r = zs.lambada(model, tok, examples, progress=True)
        else:
            r = zs.multiple_choice(model, tok, examples, fmt, progress=True)
        scores[os.path.basename(path)] = dict(format=fmt, **r)
        results.add("zero_shot", scores)
        print(f"{os.path.basename(path)} ({fmt}): " + ", ".join(
            f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, float)))


def _eval_memory(fv, plan, model, tok, config, prepared, results) -> None:
    """The memory probe (hope_jax.eval.memory_probe): writes on vs off, loss by position,
    memorisation gain, MQAR on vs off. JSON in results, PNG beside it."""
    import numpy as np
    from hope_jax.config import decoder_config
    from hope_jax.eval.memory_probe import memory_probe, plot_memory_probe, summary_lines
    T = int(config.data.seq_len)
    r = memory_probe(model, np.asarray(prepared.tokens("valid")), np.asarray(tok.token_bytes()),
                     T, documents=_documents(prepared, "valid", 8),
                     model_config=decoder_config(config, 128), mqar_steps=fv.mqar_steps,
                     windows=fv.probe_windows, seed=fv.seed or 0, progress=True)
    from hope_jax.data import storage
    png = storage.join(results.dir, "memory_probe.png")  # eval/ may not exist yet (first task)
    title = f"memory probe: {config.model.arch}-{config.model.size}"
    storage.write_with(png, lambda path: plot_memory_probe(r, path, title=title))
    r["plot"] = png
    results.add("memory", r)
    for line in summary_lines(r):
        print(f"memory probe, {line}")
    print(f"plot: {png}")


_EVAL_RUNNERS = dict(bpb=_eval_bpb, niah=_eval_niah, memorization=_eval_memorization,
                     mqar=_eval_mqar, zero_shot=_eval_zero_shot, memory=_eval_memory)
EVAL_TASKS = tuple(_EVAL_RUNNERS)  # what --tasks accepts

register("train", Command("train a model (resumes from --workdir's newest intact checkpoint)",
                          f"{PROG} train [--config=FILE[:ARG]] [--config.GROUP.KEY=VALUE …] "
                          "[--workdir=DIR]", ("config", "workdir"), cmd_train))
register("eval", Command("evaluate a trained run: held-out bpb, NIAH, memorisation, MQAR, "
                         "zero-shot files", f"{PROG} eval --workdir=DIR [--tasks=…] [flags]",
                         ("workdir", "tasks", "zero_shot", "niah_lengths", "niah_depths",
                          "niah_task", "niah_samples", "eval_batches", "mqar_steps",
                          "probe_windows", "seed"),
                         cmd_eval))
register("generate", Command("sample text from a trained run",
                             f"{PROG} generate --workdir=DIR [--prompt=TEXT] [flags]",
                             ("workdir", "prompt", "max_tokens", "temperature", "top_k",
                              "top_p", "seed"), cmd_generate))
register("data", Command("download, tokenize and cache the corpus of a config (once); with "
                         "--config.data.prepared_dir=DIR: ArrayRecord shards in DIR for every host",
                         f"{PROG} data prepare [--config=FILE[:ARG]] [--config.GROUP.KEY=VALUE …]",
                         ("config",), cmd_data))

cli_learn.register_commands()  # `learn`, --learn on eval/generate

if __name__ == "__main__":
    main()
