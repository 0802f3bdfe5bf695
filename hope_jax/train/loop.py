"""The training loop: `train(config, workdir) -> metrics` and `load_for_inference(workdir)`.

    build: mesh → model (params created sharded) → optimizer → checkpointer, data iterator
    restore: newest checkpoint, or a warm start, or fresh parameters
    step loop: batch → jitted step (NaN policy inside), then the hooks: log (tqdm, TensorBoard,
      metrics.jsonl) → held-out bpb every eval_every → checkpoint every checkpoint_every;
      SIGTERM: finish the step, checkpoint, wait, return normally (exit status 0)
    shutdown: final eval, final checkpoint, loss.png, print where everything is.

`train` runs these phases as the methods of `_Run`, which holds one call's state.

See docs/training.md for the TensorBoard tags, the MFU definition and the resume guarantees.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
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
from hope_jax.config.defaults import config_from_dict
from hope_jax.data import storage
from hope_jax.data.bpb import score_bpb
from hope_jax.data.tokenizers import TOKENIZER_JSON, load_tokenizer, save_tokenizer_once
from hope_jax.models.decoder import Decoder
from hope_jax.train import mesh as mesh_lib
from hope_jax.train.build import Trainer, build_trainer
from hope_jax.train import checkpoint as checkpoint_lib
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.host_memory import compile_ahead
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


class _Run:
    """One `train` call: the phases are the methods, in the order `train` calls them — build
    (`__init__`), `restore`, `open_outputs`, `step_loop` (with the per-step hooks `_check_finite`,
    `_log`, `_maybe_eval`, `_maybe_checkpoint`), `finish`, `close` and `report`."""

    def __init__(self, config, workdir: str, data, devices):
        """Build: mesh, data, model and optimizer, checkpointer and data iterator. Shapes are
        validated before anything compiles, and nothing is created before the corpus is ready."""
        self.config, self.data = config, data
        self.main = is_main_process()
        tc = config.train
        self.workdir = storage.resolve(workdir)
        # A remote workdir (gs://…): checkpoints and the tokenizer go there directly; the files
        # written a line at a time live in a local mirror and are copied up at every checkpoint.
        self.remote = storage.is_remote(self.workdir)
        self.local = storage.local_mirror(self.workdir) if self.remote else self.workdir
        self.pc, self.pi = jax.process_count(), jax.process_index()
        self.G, self.T = int(tc.global_batch), int(config.data.seq_len)
        self.mesh = mesh_lib.build_mesh(config.mesh, devices)
        mesh_lib.validate_batch(self.G, self.mesh, int(config.optim.grad_accum), self.pc)
        self.prepared = data.prepare(config.data, progress=bool(tc.progress and self.main))
        self.tok = self.prepared.tokenizer
        self.V = int(self.tok.vocab_size)
        self.trainer = build_trainer(config, self.V, self.mesh, pad_id=int(self.tok.pad_id))
        self.compiled_step = None   # train_step compiled at the first step (host_memory)
        storage.makedirs(self.workdir)  # only now: a bad corpus or config creates nothing
        self._download_metrics()
        if self.main and hasattr(self.tok, "save"):  # generate / eval read it without the data
            save_tokenizer_once(self.tok, run_tokenizer_dir(self.workdir))
        self.ckpt = Checkpointer(self.workdir, int(tc.keep_checkpoints), log_dir=self.local)
        self.it = data.train_iterator(self.prepared, seq_len=self.T, batch_size=self.G // self.pc,
                                      seed=int(config.data.shuffle_seed), process_index=self.pi,
                                      process_count=self.pc,
                                      worker_count=int(config.data.worker_count))

    def restore(self, init_from: str) -> None:
        """The state: the workdir's newest checkpoint (with the data order), else a warm start
        from `init_from`, else a fresh one."""
        try:
            restored = self.ckpt.restore(self.trainer.abstract_state, self.config, self.V)
        except Exception:
            self.ckpt.close()
            raise
        if restored is None and init_from:
            self.state = self.trainer.init_state(_warm_start_params(init_from, self.trainer))
            if self.main:
                print(f"warm start from {init_from}", flush=True)
        elif restored is None:
            self.state = self.trainer.init_state()
        else:
            self.state, data_states, rstep = restored
            if len(data_states) == self.pc:
                self.it.set_state(data_states[self.pi])
            else:  # stacklevel 3: the caller of train()
                warnings.warn(f"checkpoint {rstep} holds {len(data_states)} data-iterator states "
                              f"for {self.pc} processes: the data order restarts", stacklevel=3)
            if self.main:
                print(f"resumed from {self.ckpt.directory}/{rstep}", flush=True)
                for line in self.ckpt.last_changes:
                    print(f"warning: resuming with a changed setting: {line}", file=sys.stderr,
                          flush=True)
        self.step = int(to_host(self.state.step))

    def open_outputs(self) -> None:
        """What the loop measures and writes: token bytes, MFU terms, memory norms, the
        settings of the hooks, TensorBoard and the progress bar (main process)."""
        tc = self.config.train
        self.rep = mesh_lib.replicated(self.mesh)
        self.token_bytes = jax.device_put(np.asarray(self.tok.token_bytes(), np.int32), self.rep)
        self.peak = (float(tc.get("peak_flops", 0.0))
                     or measure_peak_flops(self.config.model.dtype))
        self.flops_tok = model_flops_per_token(self.trainer, self.T)
        groups = memory_groups(self.trainer.codec.names)
        self.mem_norms = jax.jit(lambda p: memory_norms(p, groups), out_shardings=self.rep)
        self.poison_steps = {int(s) for s in tc.get("poison_steps", ())}
        self.stop_at, self.max_bad = int(tc.get("stop_at", 0)), int(tc.max_bad_steps)
        self.steps = int(tc.steps)
        self.log_every, self.eval_every = max(int(tc.log_every), 1), int(tc.eval_every)
        self.ckpt_every = int(tc.checkpoint_every)
        self.tb_dir = os.path.join(self.local, "tb")
        self.metrics_path = os.path.join(self.local, "metrics.jsonl")
        self.plot_path = os.path.join(self.local, "loss.png")
        self.writer = self.bar = None
        if self.main:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(logdir=self.tb_dir)
        if self.main and tc.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=self.steps, initial=self.step, unit="step", dynamic_ncols=True)
        self.stopped, self.last, self.tps, self.mfu, self.ev = "done", {}, 0.0, 0.0, {}
        self.t_mark, self.steps_mark = None, 0

    # ------------------------------------------------------------------ the step loop
    def step_loop(self, sig: _StopFlag) -> None:
        """Steps until train.steps, train.stop_at or a signal; each step runs the hooks.

        Metrics are read one step late: step N+1 is dispatched before step N's metrics are
        pulled to the host, so the device never waits for the host's bookkeeping. Steps whose
        hooks need the state (logging with memory norms, evaluation, checkpoints, the first
        and last step, stop_at) are read at once, after the pending step."""
        pending = None  # (step, device metrics) dispatched but not read yet
        while self.step < self.steps:
            if self.stop_at and self.step >= self.stop_at:
                self.stopped = "stop_at"
                break
            metrics = self._dispatch_step()
            if pending is not None:
                self._per_step_hooks(*pending)
                pending = None
            if self._reads_now(self.step):
                self._per_step_hooks(self.step, metrics)
                self._maybe_eval()
                self._maybe_checkpoint()
            else:
                pending = (self.step, metrics)
            if _any_process(sig.raised):
                self.stopped = sig.name or "sigterm"
                if self.main:
                    print(f"{self.stopped.upper()}: checkpointing step {self.step} and stopping",
                          flush=True)
                break
        if pending is not None:
            self._per_step_hooks(*pending)

    def _reads_now(self, step: int) -> bool:
        """Whether step's metrics are read before the next step is dispatched."""
        return (self.t_mark is None or step % self.log_every == 0 or step >= self.steps
                or (self.eval_every and step % self.eval_every == 0)
                or (self.ckpt_every and step % self.ckpt_every == 0)
                or (self.stop_at and step >= self.stop_at))

    def _dispatch_step(self) -> dict:
        """Dispatches one training step; returns its metrics still on the device."""
        raw = np.asarray(next(self.it)["tokens"], np.int32)
        self.data.check_token_ids(raw, self.V)
        tokens = _global_batch(raw, self.trainer.batch_sharding, self.G)
        poison = jax.device_put(np.asarray((self.step + 1) in self.poison_steps), self.rep)
        if self.compiled_step is None:  # compiled ahead of its first run
            self.compiled_step = compile_ahead(self.trainer.train_step, self.state, tokens, poison)
        self.state, m = self.compiled_step(self.state, tokens, poison)
        self.step += 1
        return m

    def _per_step_hooks(self, step: int, device_metrics: dict) -> None:
        """Reads one step's metrics and runs the NaN policy and the logging for it."""
        m = {k: float(v) for k, v in to_host(device_metrics).items()}
        if self.t_mark is None:  # the first step compiles: time from its end
            self.t_mark, self.steps_mark = time.perf_counter(), step
        self._check_finite(step, m)
        self._log(step, m)

    def _check_finite(self, step: int, m: dict) -> None:
        """A skipped (non-finite) step warns; train.max_bad_steps of them in a row stop."""
        if m["finite"] >= 1:
            self.last = m
            return
        msg = (f"step {step}: non-finite loss/gradient (loss={m['loss']}, "
               f"grad_norm={m['grad_norm']}); update skipped "
               f"({int(m['bad_steps'])}/{self.max_bad} consecutive)")
        warnings.warn(msg, RuntimeWarning, stacklevel=4)  # the caller of train()
        if m["bad_steps"] >= self.max_bad:
            raise NonFiniteTrainingError(
                f"{int(m['bad_steps'])} consecutive non-finite steps (ending at step "
                f"{step}) ≥ train.max_bad_steps={self.max_bad}: stopping. The last "
                f"checkpoint in {self.ckpt.directory} holds finite parameters; lower "
                "optim.lr or check the data.")

    def _log(self, step: int, m: dict) -> None:
        """Every log_every steps: throughput, MFU, memory norms to TensorBoard and
        metrics.jsonl; every other step only its loss to metrics.jsonl (for loss.png)."""
        if step % self.log_every == 0 or step == self.steps:  # read at once: state is step's
            now = time.perf_counter()
            if step > self.steps_mark:
                self.tps = ((step - self.steps_mark) * self.G * self.T
                            / max(now - self.t_mark, 1e-9))
                self.mfu = self.tps * self.flops_tok / self.peak
            self.t_mark, self.steps_mark = now, step
            row = dict(step=step, loss=m["loss"], lr=m["lr"], grad_norm=m["grad_norm"],
                       bad_steps=m["bad_steps"], tokens_per_s=self.tps, mfu=self.mfu)
            row.update({f"memory/{k}_norm": float(v)
                        for k, v in to_host(self.mem_norms(self.state.params)).items()})
            self.record(row)
        elif self.main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(dict(step=step, loss=m["loss"])) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{self.tps:,.0f}")

    def _maybe_eval(self) -> None:
        if self.eval_every and self.step % self.eval_every == 0 and self.step < self.steps:
            self.ev = self.eval_held_out()
            self.record(dict(step=self.step, **self.ev))
            self.t_mark, self.steps_mark = time.perf_counter(), self.step  # throughput: no eval

    def _maybe_checkpoint(self) -> None:
        if self.ckpt_every and self.step % self.ckpt_every == 0:
            self.save()
            self.t_mark, self.steps_mark = time.perf_counter(), self.step

    # ------------------------------------------------------------------ what the hooks do
    def record(self, row: dict) -> None:
        """A metrics row to TensorBoard (train/… or eval/…) and metrics.jsonl (main process)."""
        if not self.main:
            return
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                group = "eval" if k in ("bpb", "eval_loss", "eval_tokens", "bpb_se") else "train"
                self.writer.add_scalar(k if "/" in k else f"{group}/{k}", v, row["step"])
        self.writer.flush()   # a killed run keeps its TensorBoard events
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save(self) -> None:
        self.ckpt.save(self.state, data_states=_gather_json(self.it.get_state()),
                       config=self.config, vocab_size=self.V,
                       finite=bool(to_host(self.trainer.state_finite(self.state))))
        self.upload_outputs()

    def _download_metrics(self) -> None:
        """A resumed remote run continues the workdir's metrics.jsonl (main process)."""
        remote = storage.join(self.workdir, "metrics.jsonl")
        if self.remote and self.main and storage.exists(remote):
            storage.download(remote, os.path.join(self.local, "metrics.jsonl"))

    def upload_outputs(self) -> None:
        """Copies the local mirror's files (metrics.jsonl, TensorBoard events, loss.png,
        restore.log) up to a remote workdir, whole; a no-op for a local workdir."""
        if self.remote and self.main:
            if getattr(self, "writer", None) is not None:
                self.writer.flush()
            storage.upload_tree(self.local, self.workdir)

    def eval_held_out(self) -> dict:
        """Held-out bpb on train.eval_batches batches of the valid split (`evaluate`)."""
        batches = self.data.eval_batches(self.prepared, "valid", seq_len=self.T,
                                         batch_size=self.G,
                                         max_batches=int(self.config.train.eval_batches))
        return evaluate(self.trainer, self.state.params, batches, self.token_bytes, self.G)

    # ------------------------------------------------------------------ shutdown
    def finish(self) -> None:
        """The final held-out eval (unless stopped early), the last checkpoint, and its wait."""
        if self.stopped == "done":
            self.ev = self.eval_held_out()
            self.record(dict(step=self.step, **self.ev))
        self.save()
        self.ckpt.wait()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.ckpt.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        self.upload_outputs()   # also when a step raised: what was logged reaches the workdir

    def report(self) -> dict:
        """loss.png and where everything is (main process); `train`'s result."""
        if self.main:
            if os.path.exists(self.metrics_path):
                plot_losses(self.metrics_path, self.plot_path)
            self.upload_outputs()
            print(f"checkpoints: {self.ckpt.directory}\ntensorboard: {self.out('tb')}  "
                  f"(tensorboard --logdir {self.out('tb')})\nloss curve:  "
                  f"{self.out('loss.png')}", flush=True)
        if self.remote:   # everything is in the workdir now: drop the local mirror
            shutil.rmtree(self.local, ignore_errors=True)
        ev = self.ev
        return dict(step=self.step, loss=self.last.get("loss", float("nan")),
                    bpb=ev.get("bpb", float("nan")), eval_loss=ev.get("eval_loss", float("nan")),
                    bpb_ci95=ev.get("bpb_ci95"), tokens_per_s=self.tps, mfu=self.mfu,
                    stopped=self.stopped, checkpoint_dir=self.ckpt.directory,
                    async_checkpoints=self.ckpt.async_save,
                    tensorboard_dir=self.out("tb"), plot=self.out("loss.png"))

    def out(self, name: str) -> str:
        """Where `name` of the workdir's outputs ends up (remote: after upload_outputs)."""
        return storage.join(self.workdir, name)


def train(config, workdir: str, *, data_api: Any = None, devices=None,
          init_from: str | None = None) -> dict:
    """Trains per `config` in `workdir` (auto-resumes from its latest checkpoint).

    Args:
      config: an experiment config (`hope_jax.config.default_config()` schema).
      workdir: checkpoints in `<workdir>/checkpoints`, TensorBoard in `<workdir>/tb`,
        `metrics.jsonl` and `loss.png` in `<workdir>`. A local directory or a remote location
        such as gs://bucket/run (docs/training.md, "Workdirs on cloud storage").
      data_api: the data package (default `hope_jax.data`); tests may pass another with the
        same interface.
      devices: mesh devices (default all).
      init_from: a warm start (default `config.train.init_from`): when `workdir` holds no
        checkpoint yet, the parameters start from the newest checkpoint of this other run
        (same architecture; data, schedule and optimizer state start afresh). Used by the
        continual-learning runner (one phase per corpus) and for fine-tuning.

    Returns:
      {step, loss, bpb, eval_loss, tokens_per_s, mfu, stopped ('done' | 'sigterm' | 'stop_at'),
       checkpoint_dir, async_checkpoints, tensorboard_dir, plot}.
    """
    maybe_initialize(config.get("distributed"))
    run = _Run(config, workdir, _data_api(data_api), devices)
    run.restore(init_from or str(config.train.get("init_from", "") or ""))
    run.open_outputs()
    with _StopFlag(announce=run.main) as sig:
        try:
            run.step_loop(sig)
            run.finish()
        finally:
            run.close()
    return run.report()


# ------------------------------------------------------------------ inference loading
def _open_existing(workdir: str) -> Checkpointer:
    """A Checkpointer on a workdir that must already hold checkpoints (creates nothing)."""
    if not checkpoint_lib.committed_steps(workdir):
        directory = storage.join(storage.resolve(workdir), "checkpoints")
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


def run_tokenizer_dir(workdir: str) -> str:
    """Where a run keeps the tokenizer it trained with."""
    return storage.join(storage.resolve(workdir), "tokenizer")


def _run_tokenizer(ckpt: Checkpointer, config, data_api: Any):
    """The run's own tokenizer (`<workdir>/tokenizer`), else the data's (runs that predate it)."""
    directory = run_tokenizer_dir(os.path.dirname(ckpt.directory))
    if storage.exists(storage.join(directory, TOKENIZER_JSON)):
        return load_tokenizer(directory)
    return _data_api(data_api).prepare(config.data, progress=False).tokenizer


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
        ckpt.check_model_record(step, meta, saved)   # built differently today: refuse
        config = config_from_dict(saved)
        tok = _run_tokenizer(ckpt, config, data_api)
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
