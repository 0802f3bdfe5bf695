"""Stability of every memory layer's writes over long random streams (JSON out).

For each memory mixer (the self-modifying mixer of Hope and Titans' neural memory, at their
preset settings, and at the printed D19 settings for contrast), each chunk size and dtype, one
forward + backward pass over T tokens of random input from fresh random weights, and reports
whether the output and the gradients are finite, the largest |output|, and the writes' effect:
‖y(writes on) − y(writes off)‖ / ‖y(writes off)‖ (0 would mean the memory is inert).

    python experiments/bench/bench_stability.py                    # T = 16384
    python experiments/bench/bench_stability.py --length 2048 --quick
    python experiments/bench/bench_stability.py --vocab 8 --presets_only   # repeated keys
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hope_jax.layers import titans_lmm
from hope_jax.layers.memory_writes import memory_writes
from hope_jax.models import get_config
from results_json import write_results

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def mixers(d: int, heads: int) -> dict:
    """name → (config factory taking a chunk size, chunk sizes to test)."""
    hope = get_config("hope", "tiny").mixers[0]

    def hope_at(c_oth: int, c_mem: int, **kw):
        return dataclasses.replace(hope, num_heads=heads, chunk_other=c_oth, chunk_memory=c_mem,
                                   **kw)

    d19 = dict(eta_max=1.0, normalize=True, momentum_dampening=False, normalize_value=False)
    return {
        "hope (preset)": lambda c: hope_at(max(c // 4, 1), c),
        "hope (D19 as printed)": lambda c: hope_at(max(c // 4, 1), c, **d19),
        "hope (per-token curvature step)": lambda c: hope_at(max(c // 4, 1), c,
                                                             normalize="curvature_token"),
        "titans_lmm (preset)": lambda c: titans_lmm(heads, chunk_size=c),
        "titans_lmm (per-token curvature step)": lambda c: titans_lmm(
            heads, chunk_size=c, normalize="curvature_token"),
        "titans_lmm (D19 as printed)": lambda c: titans_lmm(heads, chunk_size=c, normalize=False,
                                                            momentum_dampening=False, v_l2=False),
    }


def stream(d: int, length: int, dtype, vocab: int) -> jax.Array:
    """[1, T, d] random input: Gaussian at every token (vocab 0), or tokens drawn from `vocab`
    fixed Gaussian vectors, so that a chunk holds many copies of the same key (the case where
    snapshot gradients pile up; docs/hope.md, "Chunk-causal curvature step")."""
    if vocab <= 0:
        return jax.random.normal(jax.random.PRNGKey(1), (1, length, d), dtype)
    table = jax.random.normal(jax.random.PRNGKey(1), (vocab, d), dtype)
    return table[jax.random.randint(jax.random.PRNGKey(2), (1, length), 0, vocab)]


def run_one(config, d: int, length: int, dtype, vocab: int = 0) -> dict:
    mixer = config.build(d, rngs=nnx.Rngs(0), dtype=dtype)
    u = stream(d, length, dtype, vocab)

    @nnx.jit
    def loss_and_grad(m, u):
        def f(m):
            y, _ = m(u)
            return jnp.mean(jnp.square(y.astype(jnp.float32))), y
        (l, y), g = nnx.value_and_grad(f, has_aux=True)(m)
        return l, y, g

    t0 = time.perf_counter()
    _, y, grads = loss_and_grad(mixer, u)
    y = np.asarray(y, np.float32)
    g_finite = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(grads))
    with memory_writes(mixer, False):
        _, y_off, _ = loss_and_grad(mixer, u)
    y_off = np.asarray(y_off, np.float32)
    finite = bool(np.all(np.isfinite(y)))
    bad = np.where(~np.isfinite(y).all(axis=-1))[1]
    effect = (float(np.linalg.norm(y - y_off) / max(np.linalg.norm(y_off), 1e-30)) if finite
              else None)
    return dict(finite=finite, grads_finite=g_finite,
                first_nonfinite_token=int(bad[0]) if len(bad) else None,
                max_abs_output=float(np.nanmax(np.abs(y))) if finite else None,
                write_effect=effect, seconds=time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--d_model", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--chunks", default="1,16,64")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--vocab", type=int, default=0,
                    help="draw the input from this many fixed vectors (0: Gaussian per token)")
    ap.add_argument("--quick", action="store_true", help="presets only, float32")
    ap.add_argument("--presets_only", action="store_true", help="skip the contrast rows")
    ap.add_argument("--only", default="", help="comma-separated substrings of mixer names to run")
    ap.add_argument("--out", default=os.path.join(RESULTS, "stability.json"))
    a = ap.parse_args()
    rows = []
    dtypes = ["float32"] if a.quick else a.dtypes.split(",")
    for name, make in mixers(a.d_model, a.heads).items():
        if (a.quick or a.presets_only) and "preset" not in name:
            continue
        if a.only and not any(s in name for s in a.only.split(",")):
            continue
        for c in (int(x) for x in a.chunks.split(",")):
            length = min(a.length, 2048) if c == 1 else a.length  # C = 1: the token recurrence
            for dt in dtypes:
                r = run_one(make(c), a.d_model, length, jnp.dtype(dt), a.vocab)
                r.update(mixer=name, chunk=c, dtype=dt, length=length, vocab=a.vocab)
                rows.append(r)
                print(json.dumps(r), flush=True)
    write_results(a.out, a, rows)


if __name__ == "__main__":
    main()
