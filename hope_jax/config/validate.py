"""Config validation: every mistake is reported before anything compiles, naming the key.

`validate(config, device_count=...)` checks, in order:
  1. the schema: no unknown keys (a typo such as `optim.learning_rate` is an error, not a silently
     ignored setting) and the type of every value against `default_config()`;
  2. values: enumerations (arch, size, dtype, tokenizer, corpus …) and ranges (lr > 0, …);
  3. shapes: the model builds abstractly, heads divide the width, Hope's C_mem is a multiple of
     C_oth (D12), chunk sizes are positive;
  4. the mesh: at most one -1, and the mesh fills the devices exactly; the global batch splits over
     processes, micro-batches and the data-parallel axes.
All problems found in 1–3 are reported together in one ConfigError.

The allowed values are not listed here: each comes from the table of the code that uses it
(architectures and sizes: models/presets.py; dtypes and remat: models/decoder.py; optimizers and
schedules: optim/outer.py; corpora and tokenizers: data/; mesh axes and sizing: sharding/rules.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from flax import nnx

from hope_jax.config.arch_defaults import carried_memory_fraction
from hope_jax.config.build import decoder_config
from hope_jax.config.defaults import ConfigDict, default_config
from hope_jax.core.objectives import by_name
from hope_jax.layers.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from hope_jax.models.decoder import REMAT_MODES, TRAINING_DTYPES, Decoder
from hope_jax.models.presets import ARCH_NAMES, HOPE_ARCHS, SIZES
from hope_jax.optim.outer import FALLBACKS, OPTIMIZERS, SCHEDULES
from hope_jax.sharding.rules import BATCH_AXES, check_batch, mesh_shape


class ConfigError(ValueError):
    """An invalid experiment config; the message names every offending key."""


def _type_name(value: Any) -> str:
    return type(value).__name__


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list, str))
    return True


def schema_errors(config: Any, schema: Any, prefix: str = "config") -> list[str]:
    """Unknown keys and wrongly typed values of `config` against `schema` (recursively)."""
    errors = []
    if not isinstance(config, (ConfigDict, dict)):
        return [f"{prefix}: expected a group of settings, got {_type_name(config)}"]
    for key in config.keys():
        name = f"{prefix}.{key}"
        if key not in schema:
            known = ", ".join(sorted(schema.keys()))
            errors.append(f"{name}: unknown key (known keys of {prefix}: {known})")
            continue
        value, default = config[key], schema[key]
        if isinstance(default, ConfigDict):
            errors += schema_errors(value, default, name)
        elif not _type_ok(value, default):
            errors.append(f"{name}: expected {_type_name(default)}, got {_type_name(value)} "
                          f"({value!r})")
    return errors


def resolve_mesh(mesh: Any, device_count: int) -> dict[str, int]:
    """Mesh axis sizes with the -1 axis filled (`mesh_shape`); ConfigError if they don't fit."""
    try:
        return mesh_shape(dict(mesh), device_count)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _value_errors(c: Any) -> list[str]:
    """Every out-of-range value of the config, section by section (one message each)."""
    e = []

    def need(ok: bool, key: str, msg: str):
        if not ok:
            e.append(f"config.{key}: {msg}, got {c[key.split('.')[0]][key.split('.')[1]]!r}")

    for section in (_model_errors, _data_errors, _optim_errors, _train_sample_errors):
        section(c, need, e)
    return e


def _model_errors(c: Any, need: Callable, e: list[str]) -> None:
    need(c.model.arch in ARCH_NAMES, "model.arch", f"expected one of {list(ARCH_NAMES)}")
    need(c.model.size in SIZES, "model.size", f"expected one of {sorted(SIZES)}")
    need(c.model.dtype in TRAINING_DTYPES, "model.dtype", f"expected one of {TRAINING_DTYPES}")
    need(c.model.param_dtype in TRAINING_DTYPES, "model.param_dtype",
         f"expected one of {TRAINING_DTYPES}")
    need(c.model.remat in REMAT_MODES, "model.remat", f"expected one of {REMAT_MODES}")
    need(c.model.remat_segment >= 0, "model.remat_segment", "must be ≥ 0 (0 = T/4 or T/2)")
    need(c.model.remat_segment == 0 or c.model.remat == "full", "model.remat_segment",
         "is used only with model.remat='full'")
    need(c.model.attention in ATTENTION_IMPLEMENTATIONS, "model.attention",
         f"expected one of {ATTENTION_IMPLEMENTATIONS}")
    for k in ("d_model", "num_blocks", "num_heads", "chunk_size", "chunk_other", "chunk_memory",
              "scan_group", "attention_block", "mlp_hidden"):
        need(c.model[k] >= 0, f"model.{k}", "must be ≥ 0 (0 = the size preset's value)")
    need(c.model.cms_objective in ("surrogate", "next_token"), "model.cms_objective",
         "expected 'surrogate' or 'next_token'")
    need(c.model.cms_objective != "next_token" or (c.model.arch in HOPE_ARCHS
                                                   and bool(c.model.switches.cms)),
         "model.cms_objective", "'next_token' needs a Hope arch with its CMS (switches.cms)")
    need(c.model.cms_next_token_lr > 0, "model.cms_next_token_lr", "must be > 0")
    need(isinstance(c.model.loss_chunk, int) and c.model.loss_chunk >= 0, "model.loss_chunk",
         "must be an int ≥ 0 (0 = the whole sequence at once)")
    need(c.model.loss_chunk == 0 or c.model.cms_objective == "surrogate", "model.loss_chunk",
         "is not used with model.cms_objective='next_token' (its loss is its own); set it to 0")
    try:
        by_name(c.model.switches.objective)
    except ValueError as err:
        e.append(f"config.model.switches.objective: {err}")


def _data_errors(c: Any, need: Callable, e: list[str]) -> None:
    # data/ imports grain and sentencepiece: only when a config is checked
    from hope_jax.data.cache_key import CORPORA
    from hope_jax.data.tokenizers import TOKENIZER_KINDS
    d = c.data
    need(d.corpus in CORPORA, "data.corpus", f"expected one of {CORPORA}")
    need(d.corpus != "hf_dataset" or bool(d.hf_dataset), "data.hf_dataset",
         "corpus='hf_dataset' needs data.hf_dataset (a dataset name)")
    need(d.corpus != "files" or bool(d.files) or bool(d.hf_dataset), "data.files",
         "corpus='files' needs data.files (paths or globs) or data.hf_dataset")
    need(d.tokenizer in TOKENIZER_KINDS, "data.tokenizer", f"expected one of {TOKENIZER_KINDS}")
    need(d.tokenizer != "bpe" or 300 <= d.vocab_size <= 2 ** 20, "data.vocab_size",
         "a BPE vocabulary needs 300 ≤ vocab_size ≤ 2^20")
    need(d.seq_len >= 2, "data.seq_len", "must be ≥ 2")
    need(0.0 <= d.held_out_fraction < 1.0, "data.held_out_fraction", "must be in [0, 1)")
    need(d.worker_count >= 0, "data.worker_count", "must be ≥ 0")
    need(d.prepare_workers >= -1, "data.prepare_workers", "must be ≥ -1 (-1 = auto)")
    need(not d.tokenizer_path or d.tokenizer == "bpe", "data.tokenizer_path",
         "a sentencepiece model needs data.tokenizer='bpe'")
    if d.tokenizer_path and d.tokenizer == "bpe":
        e.extend(_tokenizer_path_errors(d.tokenizer_path))


def _optim_errors(c: Any, need: Callable, e: list[str]) -> None:
    o = c.optim
    need(o.name in OPTIMIZERS, "optim.name", f"expected one of {OPTIMIZERS}")
    need(o.fallback in FALLBACKS, "optim.fallback", f"expected one of {FALLBACKS}")
    need(0.0 <= o.momentum < 1.0, "optim.momentum", "must be in [0, 1)")
    need(o.ns_steps >= 1, "optim.ns_steps", "must be ≥ 1")
    need(o.m3_slow_period >= 1, "optim.m3_slow_period", "must be ≥ 1")
    need(o.delta_gamma >= 0, "optim.delta_gamma", "must be ≥ 0")
    need(o.lr > 0, "optim.lr", "must be > 0")
    need(o.warmup_steps >= 0, "optim.warmup_steps", "must be ≥ 0")
    need(o.schedule in SCHEDULES, "optim.schedule", f"expected one of {SCHEDULES}")
    need(0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio", "must be in [0, 1]")
    need(0.0 <= o.b1 < 1.0, "optim.b1", "must be in [0, 1)")
    need(0.0 <= o.b2 < 1.0, "optim.b2", "must be in [0, 1)")
    need(o.eps > 0, "optim.eps", "must be > 0")
    need(o.weight_decay >= 0, "optim.weight_decay", "must be ≥ 0")
    need(o.clip_norm >= 0, "optim.clip_norm", "must be ≥ 0 (0 = off)")
    need(o.grad_accum >= 1, "optim.grad_accum", "must be ≥ 1")
    need(0.0 <= o.cms_lr_exponent <= 1.0, "optim.cms_lr_exponent", "must be in [0, 1]")


def _train_sample_errors(c: Any, need: Callable, e: list[str]) -> None:
    t = c.train
    need(t.steps >= 1, "train.steps", "must be ≥ 1")
    need(t.global_batch >= 1, "train.global_batch", "must be ≥ 1")
    need(t.log_every >= 1, "train.log_every", "must be ≥ 1")
    need(t.eval_every >= 0, "train.eval_every", "must be ≥ 0 (0 = only at the end)")
    need(t.eval_batches >= 1, "train.eval_batches", "must be ≥ 1")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", "must be ≥ 0 (0 = only at the end)")
    need(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be ≥ 1")
    need(t.max_bad_steps >= 1, "train.max_bad_steps", "must be ≥ 1")
    need(t.carried_memory == -1 or 0.0 <= t.carried_memory <= 0.5, "train.carried_memory",
         "must be in [0, 0.5] (a fraction of the rows; each carried row reads a fresh row first) "
         "or -1 (the architecture's default)")
    need(carried_memory_fraction(c) == 0 or c.model.cms_objective == "surrogate",
         "train.carried_memory",
         "is not supported with model.cms_objective='next_token' (its own training objective)")

    s = c.sample
    need(s.max_tokens >= 1, "sample.max_tokens", "must be ≥ 1")
    need(s.temperature >= 0, "sample.temperature", "must be ≥ 0 (0 = greedy)")
    need(s.top_k >= 0, "sample.top_k", "must be ≥ 0 (0 = off)")
    need(0.0 < s.top_p <= 1.0, "sample.top_p", "must be in (0, 1]")


def _tokenizer_path_errors(path: str) -> list[str]:
    """data.tokenizer_path must be a readable sentencepiece model."""
    from hope_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer
    try:
        SentencePieceTokenizer.from_file(path)
    except (OSError, ValueError) as err:
        return [f"config.data.tokenizer_path: {err}"]
    return []


def _shape_errors(c: Any) -> list[str]:
    """The model must build: heads divide the width, D12 chunk sizes, positive chunks."""
    from hope_jax.data.byte_tokenizer import ByteTokenizer  # grain, as in _value_errors
    vocab = ByteTokenizer.vocab_size if c.data.tokenizer == "byte" else c.data.vocab_size
    try:
        cfg = decoder_config(c, vocab)
    except (ValueError, TypeError, KeyError) as err:
        keys = [k for k in ("chunk_memory", "chunk_other", "chunk_size", "num_heads", "d_model",
                            "num_blocks") if k in str(err)]
        return [f"config.model{'.' + keys[0] if keys else ''}: the model cannot be built ({err})"]
    e = []

    def walk(obj: Any, path: str):
        if isinstance(obj, tuple):
            for o in obj:
                walk(o, path)
            return
        if not dataclasses.is_dataclass(obj):
            return
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        heads, head_dim = fields.get("num_heads"), fields.get("head_dim")
        if heads is not None and head_dim is None and cfg.d_model % heads:
            key = "model.num_heads" if c.model.num_heads else "model.d_model"
            e.append(f"config.{key}: {type(obj).__name__} has {heads} heads, which do not "
                     f"divide d_model={cfg.d_model}")
        for k in ("chunk_size", "chunk_other", "chunk_memory"):
            if k in fields and fields[k] is not None and fields[k] < 1:
                e.append(f"config.model.{k}: chunk sizes must be ≥ 1, got {fields[k]}")
        co, cm = fields.get("chunk_other"), fields.get("chunk_memory")
        if co and cm and cm % co:
            e.append(f"config.model.chunk_memory: C_mem={cm} must be a multiple of "
                     f"C_oth={co} (D12)")
        for f in fields.values():
            walk(f, path)

    walk(cfg.mixers, "mixers")
    walk(cfg.mlp, "mlp")
    if c.model.remat == "full" and c.model.remat_segment > 0:  # whole chunks of every level
        model = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
        try:
            model.remat_segment(int(c.data.seq_len))
        except ValueError as err:
            e.append(f"config.{err}")
    if c.model.cms_objective == "next_token":  # the learner streams whole chunks
        chunks = [lvl.chunk for lvl in getattr(cfg.mlp, "levels", ()) if lvl.in_context]
        if chunks and c.data.seq_len % math.lcm(*chunks):
            e.append(f"config.data.seq_len: model.cms_objective='next_token' needs a multiple of "
                     f"the in-context CMS chunk {math.lcm(*chunks)}, got {c.data.seq_len}")
    return sorted(set(e))


def validate(config: Any, *, device_count: int | None = None,
             process_count: int | None = None) -> dict[str, int]:
    """Raises ConfigError naming every invalid key; returns the resolved mesh axis sizes."""
    errors = schema_errors(config, default_config())
    if errors:  # later checks assume the schema holds
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    errors = _value_errors(config)
    if not errors:
        errors = _shape_errors(config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    if device_count is None or process_count is None:
        import jax
        device_count = jax.device_count() if device_count is None else device_count
        process_count = jax.process_count() if process_count is None else process_count
    mesh = resolve_mesh(config.mesh, device_count)
    data_parallel = math.prod(mesh[axis] for axis in BATCH_AXES)
    try:
        check_batch(config.train.global_batch, data_parallel, config.optim.grad_accum,
                    process_count)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return mesh


__all__ = ["ConfigError", "resolve_mesh", "schema_errors", "validate"]
