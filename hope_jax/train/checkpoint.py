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
never seen. It does not checksum finished files: a step damaged afterwards (a file deleted or
truncated) is listed, and restoring it fails. `Checkpointer.restore` then warns and falls back
to the previous step (deleting the unreadable newer ones, which the resumed run rewrites); if no
step restores, it raises. A state with non-finite values is never
saved (`save` refuses it).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

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
        if any(key == k or key.startswith(k + ".") for k in SHAPE_KEYS) and a.get(key) != b.get(key):
            diffs[key] = (a.get(key), b.get(key))
    return diffs


def _param_key(name: str) -> str:
    return name.replace("/", ".")


class Checkpointer:
    """Async orbax saves (`max_to_keep`), restore onto a mesh, auto-resume from the latest step."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        handlers = dict(params=ocp.StandardCheckpointHandler(),
                        opt_state=ocp.StandardCheckpointHandler(),
                        meta=ocp.JsonCheckpointHandler(), data=ocp.JsonCheckpointHandler(),
                        config=ocp.JsonCheckpointHandler())
        # Multi-process: orbax's barriers are jax collectives by default, and from its async
        # commit thread they can interleave with the training step's collectives differently on
        # each process (a deadlock, seen with 2 CPU processes): save synchronously there.
        async_save = bool(async_save) and jax.process_count() == 1
        options = ocp.CheckpointManagerOptions(max_to_keep=int(keep), create=True,
                                               enable_async_checkpointing=async_save)
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
        meta = dict(step=step, bad_steps=int(to_host(state.bad_steps)),
                    vocab_size=int(vocab_size), opt_structure=str(treedef))
        args = ocp.args.Composite(
            params=ocp.args.StandardSave({_param_key(k): v for k, v in state.params.items()}),
            opt_state=ocp.args.StandardSave({f"{i:05d}": x for i, x in enumerate(leaves)}),
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

    def restore_params(self, step: int, abstract_params: Mapping[str, Any]) -> dict:
        """Only the params of `step` onto the shardings of `abstract_params`."""
        target = {_param_key(k): v for k, v in abstract_params.items()}
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target)))
        return {k: out["params"][_param_key(k)] for k in abstract_params}

    def restore(self, abstract_state: TrainState, config, vocab_size: int
                ) -> tuple[TrainState, list, int] | None:
        """The newest restorable (state, per-process data states, step), or None if there is no
        checkpoint. A config of another shape raises IncompatibleCheckpointError; an unreadable
        step is skipped with a warning (falls back to the previous one)."""
        steps = self.steps()
        if not steps:
            return None
        leaves, treedef = jax.tree.flatten(abstract_state.opt_state)
        errors = []
        for step in steps:
            try:
                meta, data, saved_config = self.read_json(step)
            except Exception as e:  # noqa: BLE001 — a damaged step: try the previous one
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                log.warning("checkpoint step %d is unreadable (%s); trying the previous one",
                            step, e)
                continue
            self.check_compatible(saved_config, config, vocab_size, meta.get("vocab_size"))
            if meta.get("opt_structure") != str(treedef):
                raise IncompatibleCheckpointError(
                    f"{self.directory} step {step}: the optimizer-state structure differs from "
                    "this config's (check optim.multi_frequency / clip_norm / weight_decay)")
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(
                        {_param_key(k): v for k, v in abstract_state.params.items()}),
                    opt_state=ocp.args.StandardRestore(
                        {f"{i:05d}": x for i, x in enumerate(leaves)})))
            except Exception as e:  # noqa: BLE001
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                log.warning("checkpoint step %d is unreadable (%s); trying the previous one",
                            step, e)
                continue
            for bad in [s for s in steps if s > step]:   # would shadow the steps retrained now
                log.warning("deleting unreadable checkpoint step %d", bad)
                self.manager.delete(bad)
            params = {k: out["params"][_param_key(k)] for k in abstract_state.params}
            opt = jax.tree.unflatten(treedef, [out["opt_state"][f"{i:05d}"]
                                               for i in range(len(leaves))])
            rep = abstract_state.step.sharding
            state = TrainState(
                step=jax.device_put(np.asarray(meta["step"], np.int32), rep),
                params=params, opt_state=opt,
                bad_steps=jax.device_put(np.asarray(meta.get("bad_steps", 0), np.int32), rep))
            return state, list(data.get("processes", [])), step
        raise RuntimeError(f"no checkpoint in {self.directory} could be restored:\n  "
                           + "\n  ".join(errors))


__all__ = ["Checkpointer", "IncompatibleCheckpointError", "SHAPE_KEYS", "config_to_json",
           "shape_differences"]
