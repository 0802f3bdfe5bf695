"""The training loop: `train(config, workdir) -> metrics` and `load_for_inference(workdir)`.

    mesh → model (params created sharded) → optimizer → data iterator → restore → loop:
      batch → jitted step (NaN policy inside) → log (tqdm, TensorBoard, metrics.jsonl)
            → held-out bpb every eval_every → checkpoint every checkpoint_every
      SIGTERM: finish the step, checkpoint, wait, return normally (exit status 0)
    final eval, final checkpoint, loss.png, print where everything is.

See docs/training.md for the TensorBoard tags, the MFU definition and the resume guarantees.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hope_jax.config.build import decoder_config
from hope_jax.config.defaults import default_config
from hope_jax.data.bpb import score_bpb
from hope_jax.models.decoder import Decoder
from hope_jax.train import mesh as mesh_lib
from hope_jax.train.build import Trainer, build_trainer
from hope_jax.train import checkpoint as checkpoint_lib
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.distributed import is_main_process, maybe_initialize
from hope_jax.train.state import ParamCodec, to_host
from hope_jax.train.step import memory_groups, memory_norms

log = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """`train.max_bad_steps` consecutive steps had a non-finite loss or gradient."""


# --------------------------------------------------------------------------- helpers
class _StopFlag:
    """Sets `.raised` (and `.name`: "sigterm" | "sigint") on the first SIGTERM or SIGINT (Ctrl-C)
    while installed (main thread only); the previous handlers are restored on exit.

    A second signal goes to the previous handler (SIGINT: KeyboardInterrupt, SIGTERM: terminate),
    so a run stuck inside a step can still be stopped."""

    SIGNALS = {signal.SIGTERM: "sigterm", signal.SIGINT: "sigint"}

    def __init__(self, announce: bool = True):
        self.raised = False
        self.name = ""
        self.announce = announce
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.raised:
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if callable(previous):
                previous(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        self.raised, self.name = True, self.SIGNALS[signum]
        if self.announce:
            what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            print(f"\n{what}: finishing this step, then checkpointing and stopping "
                  f"({what} again aborts without a checkpoint)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        return False


_SigtermFlag = _StopFlag  # the former name


def _any_process(flag: bool) -> bool:
    """True if `flag` is set on any process (all processes must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def _gather_json(obj: Any) -> list:
    """[obj of process 0, obj of process 1, …] on every process."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils
    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([raw.size], np.int32))).ravel()
    buf = np.zeros(int(sizes.max()), np.uint8)
    buf[:raw.size] = raw
    allbuf = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
    return [json.loads(bytes(allbuf[i, :sizes[i]]).decode()) for i in range(len(sizes))]


def measure_peak_flops(dtype: str = "float32", n: int = 1024, repeats: int = 5) -> float:
    """Peak matmul FLOP/s of this host's devices, measured once: best of `repeats` n×n matmuls
    in the compute dtype (float32 accumulation) on device 0, × the device count on
    accelerators (on CPU the fake devices share the host's cores, so one measurement is the
    host's peak)."""
    dev = jax.local_devices()[0]
    a = jax.device_put(jnp.ones((n, n), dtype), dev)
    f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    f(a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    per_device = 2 * n ** 3 / max(best, 1e-9)
    return per_device * (1 if dev.platform == "cpu" else jax.device_count())


def model_flops_per_token(trainer: Trainer, seq_len: int) -> float:
    """Training FLOPs per token ≈ 6·N + 12·L·d·T (N: parameters except the embedding table;
    the second term counts attention-like token mixing in every block, forward + backward)."""
    n = sum(int(np.prod(a.shape)) for k, a in trainer.abstract_state.params.items()
            if k != "embed")
    cfg = trainer.model_config
    return 6.0 * n + 12.0 * cfg.num_blocks * cfg.d_model * seq_len


def _global_batch(local: np.ndarray, sharding, global_rows: int) -> jax.Array:
    """A global [global_rows, …] array from this process's rows."""
    local = np.asarray(local)
    return jax.make_array_from_process_local_data(sharding, local,
                                                  (global_rows,) + local.shape[1:])


def _local_rows(x: np.ndarray) -> np.ndarray:
    """This process's contiguous share of rows of an array every process holds."""
    n, p = jax.process_count(), jax.process_index()
    rows = x.shape[0] // n
    return x[p * rows:(p + 1) * rows]


def evaluate(trainer: Trainer, params, batches: Iterator[dict], token_bytes: jax.Array,
             batch_rows: int) -> dict[str, float]:
    """Held-out bits per byte over `batches` (every process iterates the same batches) with the
    one bpb implementation, `hope_jax.data.bpb.score_bpb`, here scoring each batch with the
    sharded eval step: dict(bpb, eval_loss (nats/token), eval_tokens, bpb_se, bpb_ci95)."""
    host_bytes = np.asarray(to_host(token_bytes), np.int64)

    def score(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        t = _global_batch(_local_rows(tokens), trainer.batch_sharding, batch_rows)
        m = _global_batch(_local_rows(mask), trainer.batch_sharding, batch_rows)
        nats, _, _ = to_host(trainer.eval_step(params, t, m, token_bytes))
        return np.asarray([float(nats)])

    r = score_bpb(batches, score, host_bytes, rows=batch_rows)
    return dict(bpb=r["bpb"], eval_loss=r["nats"] / max(r["tokens"], 1), eval_tokens=r["tokens"],
                bpb_se=r["bpb_se"], bpb_ci95=r["bpb_ci95"])


def plot_losses(metrics_path: str, out_path: str) -> None:
    """loss.png from metrics.jsonl: the training loss (nats/token, left axis) and the held-out
    bits per byte (right axis) against the step, each axis labelled with its unit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train_pts, eval_pts = {}, {}
    with open(metrics_path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:      # a line cut by a killed run
                continue
            if "loss" in r:
                train_pts[r["step"]] = r["loss"]
            if "bpb" in r:
                eval_pts[r["step"]] = r["bpb"]
    fig, ax = plt.subplots(figsize=(7, 4))
    lines = []
    if train_pts:
        s = sorted(train_pts)
        lines += ax.plot(s, [train_pts[i] for i in s], color="C0",
                         label="training loss (nats/token)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)", color="C0")
    ax.grid(alpha=0.3)
    if eval_pts:
        right = ax.twinx()
        s = sorted(eval_pts)
        lines += right.plot(s, [eval_pts[i] for i in s], "o-", color="C1",
                            label="held-out bits/byte")
        right.set_ylabel("held-out bits per byte", color="C1")
    if lines:
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def _data_api(data_api):
    return data_api if data_api is not None else importlib.import_module("hope_jax.data")


# --------------------------------------------------------------------------- train
def _warm_start_params(init_from: str, trainer: Trainer) -> dict:
    """The parameters of the newest readable checkpoint of another run `init_from`, placed on this
    run's shardings (the architecture must match; the data and optimizer may differ)."""
    try:
        other = _open_existing(init_from)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"train.init_from: {e}") from None
    try:
        steps = other.steps()
        errors = []
        for step in steps:
            try:
                return other.restore_params(step, trainer.abstract_state.params)
            except Exception as e:  # try the previous step
                errors.append(f"step {step}: {e}")
        raise ValueError(f"train.init_from: no checkpoint of {other.directory} matches this "
                         f"model's parameters: {errors[:2]}")
    finally:
        other.close()


def train(config, workdir: str, *, data_api: Any = None, devices=None,
          init_from: str | None = None) -> dict:
    """Trains per `config` in `workdir` (auto-resumes from its latest checkpoint).

    Args:
      config: an experiment config (`hope_jax.config.default_config()` schema).
      workdir: checkpoints in `<workdir>/checkpoints`, TensorBoard in `<workdir>/tb`,
        `metrics.jsonl` and `loss.png` in `<workdir>`.
      data_api: the data package (default `hope_jax.data`); tests may pass another with the
        same interface.
      devices: mesh devices (default all).
      init_from: a warm start (default `config.train.init_from`): when `workdir` holds no
        checkpoint yet, the parameters start from the newest checkpoint of this other run
        (same architecture; data, schedule and optimizer state start afresh). Used by the
        continual-learning runner (one phase per corpus) and for fine-tuning.

    Returns:
      {step, loss, bpb, eval_loss, tokens_per_s, mfu, stopped ('done' | 'sigterm' | 'stop_at'),
       checkpoint_dir, tensorboard_dir, plot}.
    """
    maybe_initialize(config.get("distributed"))
    data = _data_api(data_api)
    main = is_main_process()
    tc, oc = config.train, config.optim
    workdir = os.path.abspath(os.path.expanduser(workdir))
    pc, pi = jax.process_count(), jax.process_index()
    G, T = int(tc.global_batch), int(config.data.seq_len)

    # Validate the shapes before anything compiles.
    mesh = mesh_lib.build_mesh(config.mesh, devices)
    mesh_lib.validate_batch(G, mesh, int(oc.grad_accum), pc)

    prepared = data.prepare(config.data, progress=bool(tc.progress and main))
    tok = prepared.tokenizer
    V = int(tok.vocab_size)
    trainer = build_trainer(config, V, mesh, pad_id=int(tok.pad_id))
    os.makedirs(workdir, exist_ok=True)   # only now: a bad corpus or config creates nothing
    ckpt = Checkpointer(workdir, int(tc.keep_checkpoints))
    it = data.train_iterator(prepared, seq_len=T, batch_size=G // pc,
                             seed=int(config.data.shuffle_seed), process_index=pi,
                             process_count=pc, worker_count=int(config.data.worker_count))

    try:
        restored = ckpt.restore(trainer.abstract_state, config, V)
    except Exception:
        ckpt.close()
        raise
    init_from = init_from or str(tc.get("init_from", "") or "")
    if restored is None and init_from:
        state = trainer.init_state(_warm_start_params(init_from, trainer))
        if main:
            print(f"warm start from {init_from}", flush=True)
    elif restored is None:
        state = trainer.init_state()
    else:
        state, data_states, rstep = restored
        if len(data_states) == pc:
            it.set_state(data_states[pi])
        else:
            warnings.warn(f"checkpoint {rstep} holds {len(data_states)} data-iterator states for "
                          f"{pc} processes: the data order restarts", stacklevel=2)
        if main:
            print(f"resumed from {ckpt.directory}/{rstep}", flush=True)
            for line in ckpt.last_changes:
                print(f"warning: resuming with a changed setting: {line}", file=sys.stderr,
                      flush=True)
    step = int(to_host(state.step))

    rep = mesh_lib.replicated(mesh)
    token_bytes = jax.device_put(np.asarray(tok.token_bytes(), np.int32), rep)
    peak = float(tc.get("peak_flops", 0.0)) or measure_peak_flops(config.model.dtype)
    flops_tok = model_flops_per_token(trainer, T)
    groups = memory_groups(trainer.codec.names)
    mem_norms = jax.jit(lambda p: memory_norms(p, groups), out_shardings=rep)
    poison_steps = {int(s) for s in tc.get("poison_steps", ())}
    stop_at = int(tc.get("stop_at", 0))
    max_bad = int(tc.max_bad_steps)
    log_every, eval_every = max(int(tc.log_every), 1), int(tc.eval_every)
    ckpt_every = int(tc.checkpoint_every)
    tb_dir = os.path.join(workdir, "tb")
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    plot_path = os.path.join(workdir, "loss.png")

    writer = None
    if main:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(logdir=tb_dir)
    bar = None
    if main and tc.progress:
        from tqdm import tqdm
        bar = tqdm(total=int(tc.steps), initial=step, unit="step", dynamic_ncols=True)

    def record(row: dict) -> None:
        if not main:
            return
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                group = "eval" if k in ("bpb", "eval_loss", "eval_tokens", "bpb_se") else "train"
                writer.add_scalar(k if "/" in k else f"{group}/{k}", v, row["step"])
        writer.flush()   # a killed run keeps its TensorBoard events
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save() -> None:
        ckpt.save(state, data_states=_gather_json(it.get_state()), config=config, vocab_size=V,
                  finite=bool(to_host(trainer.state_finite(state))))

    def run_eval() -> dict:
        batches = data.eval_batches(prepared, "valid", seq_len=T, batch_size=G,
                                    max_batches=int(tc.eval_batches))
        return evaluate(trainer, state.params, batches, token_bytes, G)

    stopped, last, tps, mfu, ev = "done", {}, 0.0, 0.0, {}
    t_mark, steps_mark = None, 0
    with _StopFlag(announce=main) as sig:
        try:
            while step < int(tc.steps):
                if stop_at and step >= stop_at:
                    stopped = "stop_at"
                    break
                raw = np.asarray(next(it)["tokens"], np.int32)
                data.check_token_ids(raw, V)
                tokens = _global_batch(raw, trainer.batch_sharding, G)
                poison = jax.device_put(np.asarray((step + 1) in poison_steps), rep)
                state, m = trainer.train_step(state, tokens, poison)
                step += 1
                m = {k: float(v) for k, v in to_host(m).items()}
                if t_mark is None:  # the first step compiles: time from its end
                    t_mark, steps_mark = time.perf_counter(), step
                if m["finite"] < 1:
                    msg = (f"step {step}: non-finite loss/gradient (loss={m['loss']}, "
                           f"grad_norm={m['grad_norm']}); update skipped "
                           f"({int(m['bad_steps'])}/{max_bad} consecutive)")
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                    if m["bad_steps"] >= max_bad:
                        raise NonFiniteTrainingError(
                            f"{int(m['bad_steps'])} consecutive non-finite steps (ending at step "
                            f"{step}) ≥ train.max_bad_steps={max_bad}: stopping. The last "
                            f"checkpoint in {ckpt.directory} holds finite parameters; lower "
                            "optim.lr or check the data.")
                else:
                    last = m
                if step % log_every == 0 or step == int(tc.steps):
                    now = time.perf_counter()
                    if step > steps_mark:
                        tps = (step - steps_mark) * G * T / max(now - t_mark, 1e-9)
                        mfu = tps * flops_tok / peak
                    t_mark, steps_mark = now, step
                    row = dict(step=step, loss=m["loss"], lr=m["lr"], grad_norm=m["grad_norm"],
                               bad_steps=m["bad_steps"], tokens_per_s=tps, mfu=mfu)
                    row.update({f"memory/{k}_norm": float(v)
                                for k, v in to_host(mem_norms(state.params)).items()})
                    record(row)
                elif main:  # every step's loss goes to metrics.jsonl (for loss.png)
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(dict(step=step, loss=m["loss"])) + "\n")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{tps:,.0f}")
                if eval_every and step % eval_every == 0 and step < int(tc.steps):
                    ev = run_eval()
                    record(dict(step=step, **ev))
                    t_mark, steps_mark = time.perf_counter(), step  # throughput excludes eval
                if ckpt_every and step % ckpt_every == 0:
                    save()
                    t_mark, steps_mark = time.perf_counter(), step
                if _any_process(sig.raised):
                    stopped = sig.name or "sigterm"
                    if main:
                        print(f"{stopped.upper()}: checkpointing step {step} and stopping",
                              flush=True)
                    break
            if stopped == "done":
                ev = run_eval()
                record(dict(step=step, **ev))
            save()
            ckpt.wait()
        finally:
            if bar is not None:
                bar.close()
            ckpt.close()
            if writer is not None:
                writer.flush()
                writer.close()

    if main:
        if os.path.exists(metrics_path):
            plot_losses(metrics_path, plot_path)
        print(f"checkpoints: {ckpt.directory}\ntensorboard: {tb_dir}  "
              f"(tensorboard --logdir {tb_dir})\nloss curve:  {plot_path}", flush=True)
    return dict(step=step, loss=last.get("loss", float("nan")), bpb=ev.get("bpb", float("nan")),
                eval_loss=ev.get("eval_loss", float("nan")), bpb_ci95=ev.get("bpb_ci95"),
                tokens_per_s=tps, mfu=mfu,
                stopped=stopped, checkpoint_dir=ckpt.directory, tensorboard_dir=tb_dir,
                plot=plot_path)


# ------------------------------------------------------------------ inference loading
def _set_recursive(cfg, values: dict) -> None:
    for k, v in values.items():
        if k not in cfg:
            continue
        if isinstance(v, dict):
            _set_recursive(cfg[k], v)
        else:
            cfg[k] = tuple(v) if isinstance(v, list) else v


def config_from_dict(values: dict):
    """`default_config()` with the (JSON) values of a saved config; unknown keys are dropped."""
    config = default_config()
    _set_recursive(config, values)
    return config


def _open_existing(workdir: str) -> Checkpointer:
    """A Checkpointer on a workdir that must already hold checkpoints (creates nothing)."""
    directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")
    if not os.path.isdir(directory) or not any(n.isdigit() for n in os.listdir(directory)):
        raise FileNotFoundError(f"no checkpoint in {directory}")
    return Checkpointer(workdir, async_save=False)


def read_run_config(workdir: str):
    """(config, step) of the newest step of `workdir` whose JSON items read (no arrays are
    loaded, nothing compiles: for checks before a model is built)."""
    ckpt = _open_existing(workdir)
    try:
        with checkpoint_lib._noise_to(ckpt.log_path):
            for step in ckpt.steps():
                try:
                    _, _, saved = ckpt.read_json(step)
                except Exception:  # a damaged step: the previous one
                    continue
                return config_from_dict(saved), step
        raise checkpoint_lib.UnrestorableCheckpointError(
            f"no checkpoint in {ckpt.directory} could be read; details in {ckpt.log_path}")
    finally:
        ckpt.close()


def load_for_inference(workdir: str, *, data_api: Any = None):
    """(model, tokenizer, config) from the newest intact checkpoint of `workdir` (params on
    the default device, checked against their checksums; the config is the one saved with the
    checkpoint). Damaged steps are skipped with a one-line warning, never moved or deleted;
    a workdir without checkpoints raises FileNotFoundError and is not created."""
    ckpt = _open_existing(workdir)
    try:
        errors = []
        with checkpoint_lib._noise_to(ckpt.log_path):
            loaded = _load_newest(ckpt, data_api, errors)
        for step, err in errors:
            log.warning("checkpoint step %d is damaged (%s); skipped (details in %s)", step,
                        checkpoint_lib._short(err), ckpt.log_path)
        if loaded is None:
            raise checkpoint_lib.UnrestorableCheckpointError(
                f"no checkpoint in {ckpt.directory} could be restored ("
                + "; ".join(f"step {s}: {checkpoint_lib._short(e)}" for s, e in errors)
                + f"); details in {ckpt.log_path}")
        return loaded
    finally:
        ckpt.close()


def _load_newest(ckpt: Checkpointer, data_api: Any, errors: list):
    for step in ckpt.steps():
        try:
            meta, _, saved = ckpt.read_json(step)
        except Exception as e:
            errors.append((step, e))
            continue
        config = config_from_dict(saved)
        prepared = _data_api(data_api).prepare(config.data, progress=False)
        tok = prepared.tokenizer
        dcfg = decoder_config(config, int(tok.vocab_size))
        make = lambda: Decoder(dcfg, rngs=nnx.Rngs(int(config.train.seed)))
        graphdef, abs_params, _ = nnx.split(nnx.eval_shape(make), nnx.Param, ...)
        codec = ParamCodec(abs_params)
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=dev)
                    for k, v in codec.to_flat(abs_params).items()}
        try:
            params = ckpt.restore_params(step, abstract)
        except Exception as e:
            import traceback
            traceback.print_exception(e, file=sys.stderr)   # (into the log file)
            errors.append((step, e))
            continue
        rest = jax.jit(lambda: nnx.split(make(), nnx.Param, ...)[2])()
        return nnx.merge(graphdef, codec.to_state(params), rest), tok, config
    return None


__all__ = ["NonFiniteTrainingError", "config_from_dict", "evaluate", "load_for_inference",
           "measure_peak_flops", "model_flops_per_token", "plot_losses", "read_run_config",
           "train"]
