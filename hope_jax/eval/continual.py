"""Continual learning over phases of domains, and forgetting.

After phase p (training on domains[p]) held-out bits per byte is measured on every domain seen so
far, filling row p of bpb[phase, domain] (NaN for domains not yet seen unless eval_unseen=True).

Forgetting of domain d (default reference "own", the standard one):

    forgetting[d] = bpb[P−1, d] − bpb[d, d]                 (end of the run − just after its phase)

reference="best" uses min over phases p ≥ d of bpb[p, d] instead. Positive = forgot; the last
domain's forgetting is 0 by construction.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
import optax
from flax import nnx

from hope_jax.eval.mqar import skip_nonfinite

DEFAULT_PHASES = ("en_pip", "python_stdlib", "japanese")


def run_continual(train_fn: Callable[[int, str], None], eval_fn: Callable[[str], float],
                  domains: Sequence[str], eval_unseen: bool = False) -> np.ndarray:
    """Calls train_fn(phase, domains[phase]) then eval_fn(d) for the domains seen so far (all
    domains if eval_unseen). Returns bpb float[len(domains), len(domains)], NaN where unmeasured."""
    n = len(domains)
    if n == 0:
        raise ValueError("no domains")
    bpb = np.full((n, n), np.nan)
    for p, domain in enumerate(domains):
        train_fn(p, domain)
        for d in range(n if eval_unseen else p + 1):
            bpb[p, d] = float(eval_fn(domains[d]))
    return bpb


def forgetting(matrix: np.ndarray, reference: str = "own") -> np.ndarray:
    """Per-domain forgetting float[D] from bpb[P, D] (P = D phases; see the module docstring)."""
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square bpb[phase, domain] matrix, got shape {m.shape}")
    final = m[-1]
    if reference == "own":
        ref = np.diag(m)
    elif reference == "best":
        ref = np.array([np.nanmin(m[d:, d]) for d in range(m.shape[1])])
    else:
        raise ValueError(f"reference must be 'own' or 'best', got {reference!r}")
    return final - ref


def _init_kwarg(train_fn: Callable) -> str | None:
    """The trainer's keyword for "start from another workdir's parameters", if it has one."""
    try:
        params = inspect.signature(train_fn).parameters
    except (TypeError, ValueError):
        return None
    return next((k for k in ("init_from", "init_workdir") if k in params), None)


def _lm_loss(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


@nnx.jit
def _lm_step(model: nnx.Module, opt: nnx.Optimizer, tokens: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(_lm_loss)(model, tokens)
    opt.update(model, grads)
    return loss


class _InProcessTrainer:
    """The fallback when hope_jax.train.train cannot start from other parameters: one model and
    one AdamW state (config.optim lr / betas / eps / weight decay / clip; constant LR after a
    linear warm-up) carried through every phase, trained on data.train_iterator batches. Steps
    with a non-finite gradient are skipped (`mqar.skip_nonfinite`; their loss stays in the list)."""

    def __init__(self, config, hdata, vocab_size: int):
        from hope_jax.config.build import decoder_config
        from hope_jax.models import Decoder
        self.config, self.hdata = config, hdata
        self.model = Decoder(decoder_config(config, vocab_size),
                             rngs=nnx.Rngs(int(config.train.seed)))
        o = config.optim
        lr = optax.linear_schedule(0.0, float(o.lr), max(1, int(o.warmup_steps)))
        parts = [optax.clip_by_global_norm(float(o.clip_norm))] if o.clip_norm else []
        parts.append(optax.adamw(lr, b1=float(o.b1), b2=float(o.b2), eps=float(o.eps),
                                 weight_decay=float(o.weight_decay)))
        self.opt = nnx.Optimizer(self.model, skip_nonfinite(optax.chain(*parts)), wrt=nnx.Param)

    def train(self, prepared, steps: int, seed: int) -> list[float]:
        it = self.hdata.train_iterator(prepared, seq_len=int(self.config.data.seq_len),
                                       batch_size=int(self.config.train.global_batch), seed=seed)
        return [float(_lm_step(self.model, self.opt, next(it)["tokens"])) for _ in range(steps)]


class _PhaseRunner:
    """train_fn / eval_fn of `continual_learning`, and what its phases share: the prepared
    corpora, the current model and workdir, the workdirs written and the in-process losses."""

    def __init__(self, config, workdir_root: str, steps_per_phase: int, eval_batches: int,
                 hdata, htrain, bits_per_byte: Callable):
        self.config, self.workdir_root = config, workdir_root
        self.steps_per_phase, self.eval_batches = steps_per_phase, eval_batches
        self.hdata, self.htrain, self.bits_per_byte = hdata, htrain, bits_per_byte
        self.init_kw = _init_kwarg(htrain.train)
        self.prepared: dict = {}
        self.state: dict = dict(model=None, workdir=None)
        self.workdirs: list[str] = []
        self.losses: list[list[float]] = []
        self.fallback: list = []  # the in-process trainer, built at the first phase (needs vocab)

    def phase_config(self, corpus: str):
        c = self.config.copy_and_resolve_references()
        c.data.corpus = corpus
        c.train.steps = self.steps_per_phase
        return c

    def prepare(self, corpus: str):
        if corpus not in self.prepared:
            self.prepared[corpus] = self.hdata.prepare(self.phase_config(corpus).data)
        return self.prepared[corpus]

    def train(self, p: int, corpus: str) -> None:
        config, state = self.config, self.state
        if self.init_kw is None:
            prep = self.prepare(corpus)
            if not self.fallback:
                self.fallback.append(_InProcessTrainer(config, self.hdata,
                                                       int(prep.tokenizer.vocab_size)))
            seed = int(config.data.shuffle_seed) + p
            self.losses.append(self.fallback[0].train(prep, self.steps_per_phase, seed))
            state["model"] = self.fallback[0].model
            return
        workdir = os.path.join(self.workdir_root, f"phase{p}_{corpus}")
        kwargs = {} if state["workdir"] is None else {self.init_kw: state["workdir"]}
        self.htrain.train(self.phase_config(corpus), workdir, **kwargs)
        self.workdirs.append(workdir)
        state["model"] = self.htrain.load_for_inference(workdir)[0]
        state["workdir"] = workdir

    def eval(self, corpus: str) -> float:
        config = self.config
        prep = self.prepare(corpus)
        batches = self.hdata.eval_batches(prep, "valid", seq_len=int(config.data.seq_len),
                                          batch_size=int(config.train.global_batch),
                                          max_batches=self.eval_batches)
        return self.bits_per_byte(self.state["model"], batches,
                                  prep.tokenizer.token_bytes())["bpb"]


def continual_learning(config, workdir_root: str,
                       phases: Sequence[str] = DEFAULT_PHASES, steps_per_phase: int = 200,
                       eval_batches: int = 8, eval_unseen: bool = False) -> dict:
    """The default runner: trains `config` (a hope_jax ConfigDict) on each corpus in turn.

    One byte tokenizer throughout (data.tokenizer must be "byte"). Phase p continues from phase
    p−1's parameters:
      * if hope_jax.train.train accepts `init_from` (or `init_workdir`), phase p trains
        steps_per_phase steps in `workdir_root/phase{p}_{corpus}` starting from the previous
        workdir's checkpoint, and the model is read back with train.load_for_inference;
      * otherwise (the trainer refuses to resume a checkpoint on another corpus: data.corpus is
        one of its shape keys) an in-process loop trains one model and one AdamW state through
        all phases (`_InProcessTrainer`; no checkpoints are written, workdirs are empty).
    Held-out bpb: data.eval_batches(prepared, "valid", ...). Returns dict(domains, bpb,
    forgetting, workdirs, losses (the in-process loop's per-phase losses, else empty)).
    """
    from hope_jax import data as hdata  # lazy: data and train are heavy and optional here
    from hope_jax import train as htrain
    from hope_jax.eval.perplexity import bits_per_byte

    if config.data.tokenizer != "byte":
        raise ValueError("continual_learning needs one tokenizer throughout: set "
                         "data.tokenizer='byte'")
    run = _PhaseRunner(config, workdir_root, steps_per_phase, eval_batches, hdata, htrain,
                       bits_per_byte)
    bpb = run_continual(run.train, run.eval, phases, eval_unseen)
    return dict(domains=list(phases), bpb=bpb, forgetting=forgetting(bpb),
                workdirs=run.workdirs, losses=run.losses)


__all__ = ["DEFAULT_PHASES", "continual_learning", "forgetting", "run_continual"]
