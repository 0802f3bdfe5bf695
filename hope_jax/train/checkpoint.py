"""Checkpoints of a run with orbax's CheckpointManager (docs/training.md, "Checkpoints").

Layout: `<workdir>/checkpoints/<step>/{params, opt_state, meta, data, config}`:

  params     the flat params {name: array} (names with '/' → '.'), restored onto the mesh
  opt_state  the optimizer-state leaves {index: array}, restored into the structure of a fresh
             `tx.init` (the saved structure string is checked against it)
  meta       JSON {step, bad_steps, vocab_size, opt_structure}
  data       JSON {"processes": [iterator state of process 0, 1, …]}
  config     JSON of the experiment config

What orbax guarantees (orbax-checkpoint 0.12): a step is written into a temporary directory
`<step>.orbax-checkpoint-tmp-*` and renamed to `<step>` only after every item (and, multi-host,
every process) has finished; `all_steps()` lists only finalised steps, so an interrupted save is
never seen. Orbax does not checksum finished files, so `save` stores two 32-bit checksums of
every array's bits in `meta` (`array_checksums`, computed on the devices) and `restore`
recomputes them: a step whose files are missing, truncated or altered (even with the same size)
is reported in one line and skipped for the newest intact one. A damaged step is never deleted:
a resuming run moves it aside to `<step>.corrupt` (so the steps it writes again are not shadowed
by it); readers (`hope-jax eval` / `generate`) only skip it. orbax's and TensorStore's messages
about the damaged step go to `<workdir>/restore.log`, not to the terminal. A state with
non-finite values is never saved (`save` refuses it).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from hope_jax.data import storage
from hope_jax.train.model_record import model_record, record_differences
from hope_jax.train.state import TrainState, all_finite, to_host

log = logging.getLogger(__name__)

ITEMS = ("params", "opt_state", "meta", "data", "config")

# Config keys that fix the shapes of the params / data: a resumed run must agree on them.
SHAPE_KEYS = ("model.arch", "model.size", "model.param_dtype", "model.tie_embeddings",
              "model.switches", "data.corpus", "data.files", "data.tokenizer", "data.vocab_size",
              "data.seq_len")


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint of a differently shaped model or data."""


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_to_json(config) -> dict:
    """The config as plain JSON (tuples → lists)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=str))


def shape_differences(saved: Mapping, current: Mapping) -> dict[str, tuple[Any, Any]]:
    """{key: (saved, current)} for the SHAPE_KEYS (and their sub-keys) that differ."""
    a, b = _flatten(saved), _flatten(config_to_json(current) if not isinstance(current, dict)
                                     else current)
    diffs = {}
    for key in sorted(set(a) | set(b)):
        shaped = any(key == k or key.startswith(k + ".") for k in SHAPE_KEYS)
        if shaped and a.get(key) != b.get(key):
            diffs[key] = (a.get(key), b.get(key))
    return diffs


def config_changes(saved: Mapping, current: Any) -> list[str]:
    """"key: saved → now" for every config key, other than the shape keys (which refuse), whose
    value differs between a checkpoint's saved config and the current one (keys the saved
    config does not have are not compared)."""
    a = _flatten(saved)
    b = _flatten(config_to_json(current) if not isinstance(current, dict) else current)
    out = []
    for key in sorted(set(a) & set(b)):
        if any(key == k or key.startswith(k + ".") for k in SHAPE_KEYS) or a[key] == b[key]:
            continue
        out.append(f"{key}: {a[key]!r} → {b[key]!r}")
    return out


def _param_key(name: str) -> str:
    return name.replace("/", ".")


class CorruptCheckpointError(ValueError):
    """A checkpoint step whose arrays do not match the checksums saved with it."""


def _array_checksum(x: jax.Array) -> jax.Array:
    """Two uint32 sums of the bits of `x` (plain and position-weighted, modulo 2^32): any
    single changed word changes the weighted one."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    u = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    # the row-major position of every element, built from iotas (no reshape: a sharded array
    # stays in place), then the odd weight 2·position + 1 (mod 2^32)
    position, stride = jnp.zeros(u.shape, jnp.uint32), 1
    for axis in reversed(range(u.ndim)):
        position = position + jax.lax.broadcasted_iota(jnp.uint32, u.shape, axis) * jnp.uint32(
            stride % 2 ** 32)
        stride *= u.shape[axis]
    weights = position * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * weights, dtype=jnp.uint32)])


_checksums_jit = jax.jit(lambda tree: jax.tree.map(_array_checksum, tree))


def array_checksums(tree: Mapping[str, Any]) -> dict[str, list[int]]:
    """{name: [sum, weighted sum]} of every array of a flat dict (one jitted computation)."""
    sums = to_host(_checksums_jit(dict(tree)))
    return {k: [int(v) for v in np.asarray(sums[k]).reshape(-1)] for k in tree}


def verify_checksums(saved: Mapping[str, Any] | None, tree: Mapping[str, Any], item: str) -> None:
    """Raises CorruptCheckpointError naming the arrays of `item` whose checksums differ from
    `saved` (checkpoints written before checksums existed have none: not checked)."""
    if not saved:
        return
    now = array_checksums(tree)
    bad = sorted(k for k in tree if f"{item}/{k}" in saved and saved[f"{item}/{k}"] != now[k])
    if bad:
        raise CorruptCheckpointError(f"checksum mismatch in {item}: {', '.join(bad[:3])}"
                                     + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))


def _short(err: BaseException) -> str:
    """The first line of an error, shortened (TensorStore messages run to pages)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def _noise_to(log_path: str) -> Iterator[None]:
    """Sends the process's stderr (file descriptor 2: orbax's absl log lines, TensorStore's C++
    messages, Python's own stderr) to `log_path` while inside (appended, and only if anything
    was written: a clean restore leaves no log); logging records still reach their handlers."""
    import tempfile
    sys.stderr.flush()
    saved_fd = os.dup(2)
    saved_stderr = sys.stderr
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        sys.stderr = open(os.dup(tmp.fileno()), "w", encoding="utf-8", errors="replace")
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = saved_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            tmp.seek(0)
            noise = tmp.read()
            if noise:
                os.makedirs(os.path.dirname(log_path), exist_ok=True)
                with open(log_path, "ab") as f:
                    f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode() + noise)


COMMIT_FILE = "commit_success.txt"   # orbax's completion mark where it cannot rename (gs://)


def committed_steps(workdir: str) -> list[int]:
    """The finalised steps under `<workdir>/checkpoints`, newest first, without opening orbax: a
    local step is final once renamed to its number; a remote one once its commit file exists."""
    directory = storage.join(storage.resolve(workdir), "checkpoints")
    steps = [int(n) for n in storage.listdir(directory) if n.isdigit()]
    if storage.is_remote(directory):
        steps = [s for s in steps if storage.exists(storage.join(directory, str(s), COMMIT_FILE))]
    return sorted(steps, reverse=True)


class Checkpointer:
    """Async orbax saves (`max_to_keep`), restore onto a mesh, auto-resume from the latest step."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
                 log_dir: str | None = None):
        """`workdir`: a local directory or a remote location (gs://…; orbax writes there
        directly). `log_dir`: where restore.log goes (default the workdir; a remote workdir
        needs a local one, default the system's temporary directory)."""
        root = storage.resolve(workdir)
        self.directory = storage.join(root, "checkpoints")
        if log_dir is None:
            log_dir = (os.path.join(tempfile.gettempdir(), "hope_jax_logs")
                       if storage.is_remote(root) else root)
        self.log_path = os.path.join(log_dir, "restore.log")
        self.last_changes: list[str] = []   # config keys changed since the restored step
        self.skipped: list[str] = []        # one line per damaged step skipped by a restore
        handlers = dict(params=ocp.StandardCheckpointHandler(),
                        opt_state=ocp.StandardCheckpointHandler(),
                        meta=ocp.JsonCheckpointHandler(), data=ocp.JsonCheckpointHandler(),
                        config=ocp.JsonCheckpointHandler())
        # Multi-process: orbax's default barriers are jax collectives, and from its async commit
        # thread they interleave with the training step's collectives differently on each
        # process (a deadlock, seen with 2 CPU processes). Naming every process as active makes
        # orbax use the jax.distributed client's barriers instead, which issue no collective.
        multi = jax.process_count() > 1
        mp = (ocp.options.MultiprocessingOptions(active_processes=set(range(jax.process_count())))
              if multi and os.environ.get("HOPE_JAX_SYNC_MULTIHOST_SAVE") != "1" else None)
        self.async_save = async_save = bool(async_save) and (not multi or mp is not None)
        extra = {"multiprocessing_options": mp} if mp is not None else {}
        if mp is not None:   # orbax refuses create=True with active_processes
            storage.makedirs(self.directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=int(keep), create=mp is None,
                                               enable_async_checkpointing=async_save, **extra)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=handlers)

    # ---------------------------------------------------------------- save
    def save(self, state: TrainState, *, data_states: list, config, vocab_size: int,
             finite: bool | None = None, force: bool = False) -> bool:
        """Starts an async save of `state` at its step; returns False (and saves nothing) if the
        state holds non-finite values or the step is already saved.

        `finite`: whether params and optimizer state are all finite, if the caller computed it
        (multi-process runs must: `Trainer.state_finite`, one jitted computation); None checks
        here with eager ops."""
        step = int(to_host(state.step))
        if step in self.manager.all_steps():
            return False
        if finite is None:
            finite = bool(to_host(all_finite((state.params, state.opt_state))))
        if not finite:
            log.warning("not checkpointing step %d: the state holds non-finite values", step)
            return False
        leaves, treedef = jax.tree.flatten(state.opt_state)
        params = {_param_key(k): v for k, v in state.params.items()}
        opt = {f"{i:05d}": x for i, x in enumerate(leaves)}
        sums = array_checksums({**{f"params/{k}": v for k, v in params.items()},
                                **{f"opt_state/{k}": v for k, v in opt.items()}})
        meta = dict(step=step, bad_steps=int(to_host(state.bad_steps)),
                    vocab_size=int(vocab_size), opt_structure=str(treedef),
                    array_checksums=sums, model=model_record(config, vocab_size))
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt),
            meta=ocp.args.JsonSave(meta),
            data=ocp.args.JsonSave({"processes": list(data_states)}),
            config=ocp.args.JsonSave(config_to_json(config)))
        return bool(self.manager.save(step, args=args, force=force))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ------------------------------------------------------------- restore
    def steps(self) -> list[int]:
        """Finalised steps, newest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps(), reverse=True)

    def read_json(self, step: int) -> tuple[dict, dict, dict]:
        """(meta, data, config) JSON items of `step`."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore(), data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore()))
        return out["meta"], out["data"], out["config"]

    def check_compatible(self, saved_config: Mapping, config, vocab_size: int,
                         saved_vocab: int | None = None) -> None:
        """Raises IncompatibleCheckpointError naming the differing shape keys."""
        diffs = shape_differences(saved_config, config)
        if saved_vocab is not None and int(saved_vocab) != int(vocab_size):
            diffs["vocab_size (tokenizer)"] = (saved_vocab, vocab_size)
        if diffs:
            lines = "; ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
            raise IncompatibleCheckpointError(
                f"{self.directory} holds checkpoints of a different model/data shape ({lines}). "
                "Use a new workdir, or restore the config it was trained with.")

    def check_model_record(self, step: int, meta: Mapping, saved_config: Mapping) -> None:
        """Raises IncompatibleCheckpointError if this hope_jax builds the saved config into a
        different model than the one `step` was trained as (train/model_record.py). Checkpoints
        written before the record existed cannot be checked and pass."""
        saved = meta.get("model")
        if saved is None:
            return
        diffs = record_differences(saved, model_record(saved_config, meta["vocab_size"]))
        if diffs:
            raise IncompatibleCheckpointError(
                f"{self.directory} step {step} was trained as a model that this hope_jax no "
                f"longer builds from its config ({'; '.join(diffs[:4])}"
                f"{'; …' if len(diffs) > 4 else ''}). Use the hope_jax version that wrote it, or "
                "warm-start a new run from its params (train.init_from) if that is meant.")

    def restore_params(self, step: int, abstract_params: Mapping[str, Any]) -> dict:
        """Only the params of `step` onto the shardings of `abstract_params`, checked against
        the step's checksums (CorruptCheckpointError on a mismatch)."""
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        target = {_param_key(k): v for k, v in abstract_params.items()}
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target)))
        verify_checksums(meta["meta"].get("array_checksums"), out["params"], "params")
        return {k: out["params"][_param_key(k)] for k in abstract_params}

    def _restore_arrays(self, step: int, abstract_state: TrainState, meta: Mapping) -> dict:
        """params and opt_state of `step`, verified against the saved checksums."""
        leaves = jax.tree.leaves(abstract_state.opt_state)
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(
                {_param_key(k): v for k, v in abstract_state.params.items()}),
            opt_state=ocp.args.StandardRestore({f"{i:05d}": x for i, x in enumerate(leaves)})))
        sums = meta.get("array_checksums")
        verify_checksums(sums, out["params"], "params")
        verify_checksums(sums, out["opt_state"], "opt_state")
        return out

    def _find_restorable(self, steps: list[int], abstract_state: TrainState, config,
                         vocab_size: int) -> tuple[int, dict, dict, dict, dict] | None:
        """The newest step that restores and matches its checksums: (step, arrays, meta, data,
        saved config); damaged steps are noted in `self.skipped` (details in the log file)."""
        treedef = jax.tree.structure(abstract_state.opt_state)
        for step in steps:
            try:
                meta, data, saved_config = self.read_json(step)
            except Exception as e:  # a damaged step: try the previous one
                self._note_damage(step, e)
                continue
            self.check_compatible(saved_config, config, vocab_size, meta.get("vocab_size"))
            self.check_model_record(step, meta, saved_config)
            if meta.get("opt_structure") != str(treedef):
                raise IncompatibleCheckpointError(
                    f"{self.directory} step {step}: the optimizer-state structure differs from "
                    "this config's (check optim.multi_frequency / clip_norm / weight_decay)")
            try:
                arrays = self._restore_arrays(step, abstract_state, meta)
            except Exception as e:
                self._note_damage(step, e)
                continue
            return step, arrays, meta, data, saved_config
        return None

    def _note_damage(self, step: int, err: BaseException) -> None:
        import traceback
        traceback.print_exception(err, file=sys.stderr)   # (stderr is the log file here)
        self.skipped.append(f"checkpoint step {step} is damaged ({_short(err)}); skipped")

    def _quarantine(self, steps: list[int]) -> list[str]:
        """Moves damaged steps aside to `<step>.corrupt` (never deletes them); their paths."""
        moved = []
        if jax.process_index() != 0:
            return moved
        for step in steps:
            src = storage.join(self.directory, str(step))
            dst, n = src + ".corrupt", 1
            while storage.exists(dst):
                dst, n = f"{src}.corrupt{n}", n + 1
            if storage.isdir(src):
                storage.rename(src, dst)
                moved.append(dst)
        self.manager.reload()
        return moved

    def restore(self, abstract_state: TrainState, config, vocab_size: int, *,
                quarantine: bool = True) -> tuple[TrainState, list, int] | None:
        """The newest restorable (state, per-process data states, step), or None if there is no
        checkpoint. A config of another shape raises IncompatibleCheckpointError. A damaged
        step (unreadable, or arrays not matching their checksums) is skipped with a one-line
        warning for the previous one and, with `quarantine`, moved aside to `<step>.corrupt`;
        orbax's messages go to `self.log_path`. `self.last_changes` lists the config keys that
        differ from the restored step's config."""
        steps = self.steps()
        if not steps:
            return None
        self.skipped = []
        with _noise_to(self.log_path):
            found = self._find_restorable(steps, abstract_state, config, vocab_size)
        for line in self.skipped:
            log.warning("%s (details in %s)", line, self.log_path)
        if found is None:
            raise UnrestorableCheckpointError(
                f"no checkpoint in {self.directory} could be restored ("
                + "; ".join(self.skipped) + f"); details in {self.log_path}")
        step, out, meta, data, saved_config = found
        damaged = [s for s in steps if s > step]
        if quarantine and damaged:
            for path in self._quarantine(damaged):
                log.warning("moved the damaged step aside to %s", path)
        self.last_changes = config_changes(saved_config, config)
        leaves, treedef = jax.tree.flatten(abstract_state.opt_state)
        params = {k: out["params"][_param_key(k)] for k in abstract_state.params}
        opt = jax.tree.unflatten(treedef, [out["opt_state"][f"{i:05d}"]
                                           for i in range(len(leaves))])
        rep = abstract_state.step.sharding
        state = TrainState(
            step=jax.device_put(np.asarray(meta["step"], np.int32), rep),
            params=params, opt_state=opt,
            bad_steps=jax.device_put(np.asarray(meta.get("bad_steps", 0), np.int32), rep))
        return state, list(data.get("processes", [])), step


class UnrestorableCheckpointError(RuntimeError):
    """No step of a checkpoint directory could be restored."""


__all__ = ["COMMIT_FILE", "Checkpointer", "CorruptCheckpointError", "IncompatibleCheckpointError",
           "SHAPE_KEYS", "UnrestorableCheckpointError", "array_checksums", "committed_steps",
           "config_changes", "config_to_json", "shape_differences", "verify_checksums"]
