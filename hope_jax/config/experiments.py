"""Size-dependent experiment defaults shared by the files in experiments/configs/.

`experiment_config(arch, size)` is `default_config()` with the model, data, optimiser and mesh
settings that suit a size:
  tiny / small — CPU (D13a): byte tokenizer, T = 256 / 512, 4 / 16 sequences per step, lr 3e-3,
  data-parallel mesh, float32, small with scan_group 16 (tiny trains at T = 256, not D13a's 64:
  in-context memories need room to pay; docs/hope.md, "Stable writes that matter");
  340m / 760m / 1.3b — D13 (Atlas Table 7 recipe): 32K BPE, T = 4096, bf16 compute, FSDP over all
  devices, AdamW with cosine decay, weight decay 0.1, ≈ 0.5M tokens per step (128 × 4096).
"""
from __future__ import annotations

from hope_jax.config.defaults import ConfigDict, default_config

# Memory scans keep one state per 16 chunks for the backward where memory binds (small and the
# paper sizes; docs/core.md, "Group checkpointing"): small Hope's training step at B 16 × T 512
# has an XLA peak of 4.52 GB (5.17 GB at G = 8, 20 GB with every state kept before the CMS scan
# was grouped); tiny keeps every state (0.18 GB).
SCAN_GROUP = 16

# D13: peak learning rates of Atlas Table 7 by size.
PAPER_LR = {"340m": 1.5e-3, "760m": 1.25e-3, "1.3b": 7e-4}


def experiment_config(arch: str, size: str) -> ConfigDict:
    c = default_config()
    c.model.arch, c.model.size = arch, size
    if size == "tiny":
        c.data.seq_len, c.train.global_batch, c.train.steps = 256, 4, 1000
        c.train.eval_every, c.train.checkpoint_every = 250, 250
    elif size == "small":
        c.data.seq_len, c.train.global_batch, c.train.steps = 512, 16, 2000
        c.optim.warmup_steps = 50
        c.model.scan_group = SCAN_GROUP
        c.train.eval_every, c.train.checkpoint_every = 250, 250
    elif size in PAPER_LR:
        c.model.dtype = "bfloat16"
        c.model.remat = "block"
        c.model.scan_group = SCAN_GROUP
        c.data.tokenizer, c.data.vocab_size, c.data.seq_len = "bpe", 32000, 4096
        c.optim.lr, c.optim.warmup_steps = PAPER_LR[size], 300   # D31: 1% of the steps
        c.train.global_batch, c.train.steps = 128, 30000
        c.train.eval_every, c.train.checkpoint_every, c.train.log_every = 1000, 1000, 50
        c.mesh.data, c.mesh.fsdp = 1, -1
    else:
        raise ValueError(f"unknown size {size!r}; expected tiny, small, 340m, 760m or 1.3b")
    return c


__all__ = ["PAPER_LR", "SCAN_GROUP", "experiment_config", "get_config"]


def get_config(arg: str | None = None) -> ConfigDict:
    """The CLI's embedded default (`hope-jax train` without --config): "arch,size", default
    "hope,tiny"."""
    arch, _, size = (arg or "hope,tiny").rpartition(",")
    return experiment_config(arch or "hope", size)
