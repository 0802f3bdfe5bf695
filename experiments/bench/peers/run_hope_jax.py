"""hope_jax's side of bench_peers.py: times one case and prints one JSON line.

    python experiments/bench/peers/run_hope_jax.py --case hope_tiny --steps 5

Model cases: the jitted training step of experiments/bench/bench_models.py (forward, backward,
AdamW, clip 1.0; params and optimizer state donated) on the preset `arch` at `size` with the
case's vocabulary. Layer cases: the Titans LMM mixer (`hope_jax.layers.titans.titans_lmm`) at the
case's width, heads and chunk, forward and backward w.r.t. its parameters and input.
The step is compiled first (compile time reported apart), run once to warm up, then timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from bench_models import build_step, memory_bytes  # noqa: E402
from cases import CASES, median_step_s  # noqa: E402

from hope_jax.train.host_memory import compile_ahead  # noqa: E402


def model_step(case: dict, remat: str = "", loss_chunk: int = 0, scan_group: int = 0,
               scan_blocks: bool = False):
    """(compiled step, run(step) → loss): one training step of the case's model (`remat`: a
    model.remat mode instead of the preset's; `scan_group` > 0: model.scan_group;
    `scan_blocks`: model.scan_blocks)."""
    from hope_jax.config.build import decoder_config
    from hope_jax.config.experiments import experiment_config
    c = experiment_config(case["arch"], case["size"])
    c.data.seq_len = case["seq"]
    if remat:
        c.model.remat = remat
    if scan_group:
        c.model.scan_group = scan_group
    if scan_blocks:
        c.model.scan_blocks = True
    cfg = decoder_config(c, case["vocab"])
    cfg = dataclasses.replace(cfg, vocab_size=case["vocab"])
    step, params, opt = build_step(cfg, loss_chunk=loss_chunk)
    tokens = np.random.default_rng(0).integers(0, case["vocab"], (case["batch"], case["seq"] + 1))
    tokens = jnp.asarray(tokens, jnp.int32)
    compiled = compile_ahead(step, params, opt, tokens)  # as the trainer compiles its step
    state = [params, opt]

    def run():
        state[0], state[1], loss = compiled(state[0], state[1], tokens)
        return loss
    return compiled, run


def layer_step(case: dict):
    """(compiled step, run): forward + backward of one Titans LMM layer."""
    from hope_jax.layers.titans import titans_lmm
    cfg = titans_lmm(case["heads"], head_dim=case["head_dim"], chunk_size=case["chunk"])
    layer = cfg.build(case["dim"], rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (case["batch"], case["seq"], case["dim"]))

    def loss(p, x):
        y = nnx.merge(graphdef, p, rest)(x)
        y = y[0] if isinstance(y, tuple) else y
        return y.sum()
    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    compiled = compile_ahead(grad, params, x)
    return compiled, lambda: compiled(params, x)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--remat", default="",
                    help="model cases: a model.remat mode (none | block | full)")
    ap.add_argument("--scan_group", type=int, default=0,
                    help="model cases: model.scan_group (0: the preset's)")
    ap.add_argument("--loss_chunk", type=int, default=0,
                    help="model cases: model.loss_chunk (head and loss K positions at a time)")
    ap.add_argument("--scan_blocks", action="store_true",
                    help="model cases: model.scan_blocks (one block traced, run by nnx.scan)")
    args = ap.parse_args()
    case = CASES[args.case]
    t0 = time.perf_counter()
    compiled, run = (model_step(case, args.remat, args.loss_chunk, args.scan_group,
                                args.scan_blocks)
                     if case["kind"] == "model" else layer_step(case))
    compile_s = time.perf_counter() - t0
    # the process's peak RSS so far: building and compiling the step, before it first runs
    compile_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    step_s = median_step_s(lambda: jax.block_until_ready(run()), args.steps)
    print(json.dumps(dict(side="hope_jax", case=args.case, step_s=step_s, compile_s=compile_s,
                          tokens_per_s=case["batch"] * case["seq"] / step_s,
                          xla_memory=memory_bytes(compiled), compile_rss_gb=compile_rss_gb,
                          remat=args.remat or "preset", loss_chunk=args.loss_chunk,
                          scan_group=args.scan_group or "preset", scan_blocks=args.scan_blocks,
                          jax=jax.__version__)))


if __name__ == "__main__":
    main()
