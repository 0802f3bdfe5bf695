"""How far the memory scans move when their states and arithmetic are bfloat16 instead of float32.

    python experiments/bench/bench_state_dtype.py [--seq 512] [--batch 2]

The layers keep every memory state in float32 (D30). This measures what bfloat16 states would
cost in accuracy: each level of the small presets runs over the same random inputs (SiLU of
normal draws, as after the q/k/v paths' projection and convolution) once with its state, its
parameters and its inputs in float32 and once in bfloat16, and the relative error of the outputs,
‖y_bf16 − y_f32‖ / ‖y_f32‖, is compared with the floor of rounding the float32 outputs to
bfloat16 once. Both are reported at the first and the last quarter of the sequence: an error
that grows along it is the state drifting. Writes results/state_dtype.json.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_json import write_results  # noqa: E402

from hope_jax.core import chunked_scan  # noqa: E402
from hope_jax.core import cms as core_cms  # noqa: E402
from hope_jax.core.self_modifying import self_modifying_scan  # noqa: E402
from hope_jax.layers.hope import hope_block  # noqa: E402
from hope_jax.models import get_config  # noqa: E402

BF16 = jnp.bfloat16


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                        else x, tree)


def _errors(y32: jax.Array, y16: jax.Array) -> dict:
    """Relative error overall and in the first / last quarter of the length (axis 1)."""
    y32, y16 = np.asarray(y32, np.float64), np.asarray(y16.astype(jnp.float32), np.float64)
    floor = np.asarray(jnp.asarray(y32, jnp.float32).astype(BF16).astype(jnp.float32), np.float64)
    t = y32.shape[1]
    rel = lambda a, sl: float(np.linalg.norm((a - y32)[:, sl]) / np.linalg.norm(y32[:, sl]))
    quarters = {"all": slice(None), "first_quarter": slice(0, t // 4),
                "last_quarter": slice(3 * t // 4, None)}
    return {f"{name}": dict(bf16=rel(y16, sl), rounding_floor=rel(floor, sl))
            for name, sl in quarters.items()}


def self_modifying(batch: int, seq: int, key) -> dict:
    mixer, _ = hope_block("hope", "small")
    level = mixer.level()
    h, d = mixer.num_heads, 64
    params = level.init_params(key, h, d, jnp.float32)
    xs = [jax.nn.silu(jax.random.normal(k, (batch, seq, h, d)))
          for k in jax.random.split(jax.random.fold_in(key, 1), 3)]
    run = jax.jit(lambda p, *x: self_modifying_scan(level, p, level.init_state(p, batch), *x)[0])
    return _errors(run(params, *xs), run(_cast(params, BF16), *_cast(xs, BF16)))


def in_context_cms(batch: int, seq: int, key) -> dict:
    _, cms = hope_block("hope", "small")
    lvl = cms.levels[0]
    d, hidden = 256, 256
    k = jax.random.split(key, 5)
    params = core_cms.SwiGLUParams(jax.random.normal(k[0], (d, hidden)) / d ** 0.5,
                                   jax.random.normal(k[1], (d, hidden)) / d ** 0.5,
                                   jax.random.normal(k[2], (hidden, d)) / hidden ** 0.5)
    w_target = 0.02 * jax.random.normal(k[3], (d, d))
    z = jax.random.normal(k[4], (batch, seq, d))
    z = z / jnp.sqrt(jnp.mean(z ** 2, -1, keepdims=True))  # the RMS-normalised stream

    def run(p, w, x):
        return core_cms.in_context_level(p, w, jnp.zeros((), x.dtype), x, lvl.chunk, lvl.eta_max,
                                         None, None, lvl.normalize, lvl.retention)[0]

    run = jax.jit(run)
    return _errors(run(params, w_target, z), run(_cast(params, BF16), w_target.astype(BF16),
                                                   z.astype(BF16)))


def titans(batch: int, seq: int, key) -> dict:
    cfg = get_config("titans_lmm", "small").mixers[0]
    mixer = cfg.build(256, rngs=nnx.Rngs(0))
    level, h, d = mixer.level, mixer.num_heads, mixer.head_dim
    memory0 = tuple(w[...] for w in mixer.memory0)
    k = jax.random.split(key, 4)
    l2 = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    q, kk, v = (l2(jax.nn.silu(jax.random.normal(s, (batch, seq, h, d)))) for s in k[:3])
    gates = dict(eta=jnp.full((batch, seq, h), 0.05), alpha=jnp.full((batch, seq, h), 0.99),
                 beta=jnp.full((batch, seq, h), 0.9))
    gates = {n: g for n, g in gates.items() if n != "beta" or level.spec.momentum_slot is not None}
    if not level.spec.retention:
        gates.pop("alpha")

    def run(m0, q, kk, v, g):
        return chunked_scan(level, level.init_state(m0, batch), q, kk, v, **g)[0]

    run = jax.jit(run)
    return _errors(run(memory0, q, kk, v, gates),
                   run(*_cast((memory0, q, kk, v, gates), BF16)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "state_dtype.json"))
    args = ap.parse_args()
    key = jax.random.PRNGKey(0)
    rows = []
    for name, fn in (("self_modifying (Hope mixer, small)", self_modifying),
                     ("in-context CMS level (Hope, small)", in_context_cms),
                     ("Titans LMM memory (small)", titans)):
        errors = fn(args.batch, args.seq, key)
        rows.append(dict(level=name, seq=args.seq, batch=args.batch, errors=errors))
        a = errors["all"]
        print(f"{name:38s} bf16 {a['bf16']:.4f}  rounding floor {a['rounding_floor']:.4f}  "
              f"first / last quarter {errors['first_quarter']['bf16']:.4f} / "
              f"{errors['last_quarter']['bf16']:.4f}", flush=True)
    write_results(args.out, args, rows)


if __name__ == "__main__":
    main()
