"""Shared set-up for the trainer tests: a tiny files corpus and tiny experiment configs."""
from __future__ import annotations

import os
import random

from hope_jax.config.defaults import default_config

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness. ")


def write_corpus(root: str, docs: int = 24, seed: int = 0) -> list[str]:
    """`docs` small text files (shuffled words of TEXT), one document each."""
    rng = random.Random(seed)
    words = TEXT.split()
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(docs):
        path = os.path.join(root, f"doc{i:03d}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(" ".join(rng.choice(words) for _ in range(60)) + "\n")
        paths.append(path)
    return paths


def tiny_config(tmp_root: str, *, arch: str = "transformer", steps: int = 6, **train):
    """A locked experiment config: byte tokenizer over a tiny files corpus, T = 16, batch 8,
    the `tiny` preset of `arch`, no progress bar, eval/checkpoint off unless given."""
    c = default_config()
    files = write_corpus(os.path.join(tmp_root, "corpus"))
    c.model.arch = arch
    c.data.corpus = "files"
    c.data.files = tuple(files)
    c.data.held_out_fraction = 0.25
    c.data.seq_len = 16
    c.data.cache_dir = os.path.join(tmp_root, "cache")
    c.optim.warmup_steps = 2
    # a schedule that does not depend on train.steps: the tests' runs of 1, 2, 4, 6, 8 and
    # 100 000 steps then compile one and the same train step (shared through the persistent
    # compilation cache); the cosine schedule is tested in test_optimizer.py and test_mesh.py
    c.optim.schedule = "constant"
    c.train.steps = steps
    c.train.global_batch = 8
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.eval_batches = 2
    c.train.checkpoint_every = 0
    c.train.progress = False
    c.train.peak_flops = 1e11
    c.mesh.data = -1
    for k, v in train.items():
        c.train[k] = v
    return c


def read_scalars(tb_dir: str) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from the tensorboardX event files in `tb_dir` (TFRecord framing:
    uint64 length, uint32 crc, payload, uint32 crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for name in sorted(os.listdir(tb_dir)):
        if not name.startswith("events."):
            continue
        with open(os.path.join(tb_dir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out
