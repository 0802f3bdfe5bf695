"""Learn vs eval throughput of the tiny Hope with the in-context level at its own chunk (8, the
learner's segment) and at chunk 64 (segment 64): experiments/continual/results/
throughput_cms0_chunk.json. Run from the repository root after experiments/continual/run.py's
models are trained: python experiments/continual/throughput.py [HOPE_RUN]."""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R

from hope_jax.train import load_for_inference


def main() -> None:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/hope_jax/jax_cache"))
    model, tok, config = load_for_inference(sys.argv[1] if len(sys.argv) > 1
                                            else "workdirs/cl-hope2k")
    prep = R.prepared_domain(config, "python_stdlib")
    py = np.asarray(prep.tokens("train")[:200000])
    out = {}
    for chunks in ({}, {"cms0": 64}):
        R.CMS_CHUNKS.clear()
        R.CMS_CHUNKS.update(chunks)
        out[json.dumps(chunks)] = {b: R.throughput(model, config, "hope", "adam", 1e-3, py, b, 64)
                                   for b in (8, 32)}
        print(chunks, out[json.dumps(chunks)], flush=True)
    with open(os.path.join(R.OUT, "throughput_cms0_chunk.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
