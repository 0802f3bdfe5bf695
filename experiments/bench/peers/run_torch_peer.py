"""The PyTorch peers' side of bench_peers.py: times one case and prints one JSON line.
Runs in .venv-peers (torch CPU wheel, titans-pytorch 0.5.5, nested-learning 0.2.0).

    .venv-peers/bin/python experiments/bench/peers/run_torch_peer.py --case hope_tiny --steps 2

Peers, each in its documented default mode:
- nested_learning_hope_selfmod: `nested_learning.model.HOPEModel`, block_variant "hope_selfmod"
  with the pilot_selfmod config's chunks (8 for the other memories, 64 for M_memory), levels
  (titan period 8; CMS periods 1, 4, 32, 128) and deep-momentum level optimizers; the training
  step is its documented default (`nested_learning_step`): online updates in chunks of the
  fastest CMS period (1 token), each chunk a forward, backward and memory-writing pass, then one
  AdamW step.
- nested_learning_transformer: the same package's "transformer" block variant, same step.
- titans_pytorch_mac: `titans_pytorch.MemoryAsContextTransformer` (README settings: 4 persistent
  and 16 long-term memory tokens, segment 64, heads of 64), `return_loss=True`, AdamW.
- titans_pytorch_neural_memory: `titans_pytorch.NeuralMemory(dim, chunk_size, heads, dim_head)`
  forward and backward (sum of the retrieved output as the loss).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from cases import CASES, median_step_s  # noqa: E402


def nested_learning_model(case: dict, variant: str):
    from nested_learning.levels import LevelSpec
    from nested_learning.model import HOPEModel, ModelConfig
    deep_momentum = lambda lr: dict(type="deep_momentum", lr=lr,
                                    params=dict(beta=0.9, beta2=0.999, variant="nl_l2_precond"))
    cfg = ModelConfig(
        vocab_size=case["vocab"], dim=case["dim"], num_layers=case["layers"], heads=case["heads"],
        titan_level=LevelSpec("titan", 8, optimizer_key="titan_opt"),
        cms_levels=[LevelSpec(n, p, optimizer_key="cms_opt")
                    for n, p in (("cms_fast", 1), ("cms_mid", 4), ("cms_slow", 32),
                                 ("cms_ultra", 128))],
        optimizers=dict(titan_opt=deep_momentum(6e-4), cms_opt=deep_momentum(3e-4)),
        teach_scale=0.1, teach_clip=5.0, self_mod_lr=1e-3, block_variant=variant,
        self_mod_chunk_size=8, self_mod_chunk_size_memory=64)
    return HOPEModel(cfg)


def nested_learning_step(model, opt, tokens):
    """The reproduction's documented default training step (train.online_updates = true,
    online_chunk_size = 0, per-layer teach signals, algorithm_mode two_pass_stopgrad_updates):
    the sequence is cut into chunks of the fastest CMS period (1 token for the pilot levels, the
    whole sequence for a model without CMS), each chunk with a one-token overlap; per chunk a
    forward, the loss, the per-layer teach signals, a backward (gradients accumulate) and the
    no-grad pass that writes the memories; then one clipped optimizer step."""
    from nested_learning.training import (
        _compute_layer_teach_signals,
        _infer_online_chunk_size,
        _iter_online_token_chunks,
    )
    opt.zero_grad()
    chunk = _infer_online_chunk_size(model) or tokens.size(1)
    for chunk_tokens, finalize in _iter_online_token_chunks(tokens, chunk_size=chunk):
        if chunk_tokens.size(1) < 2:
            continue
        logits, _pre, block_outputs = model.forward_with_block_outputs(chunk_tokens)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), chunk_tokens[:, 1:].reshape(-1))
        teach = _compute_layer_teach_signals(loss, block_outputs)
        loss.backward()
        with torch.no_grad():
            model(chunk_tokens, teach_signals=teach, finalize_updates=finalize)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()


def build(case: dict):
    """run() → one timed unit of work (a training step, or a layer's forward + backward)."""
    torch.manual_seed(0)
    peer = case["peer"]
    if case["kind"] == "layer":
        from titans_pytorch import NeuralMemory
        mem = NeuralMemory(dim=case["dim"], chunk_size=case["chunk"], heads=case["heads"],
                           dim_head=case["head_dim"])
        x = torch.randn(case["batch"], case["seq"], case["dim"], requires_grad=True)

        def run():
            retrieved, _ = mem(x)
            retrieved.sum().backward()
        return run
    tokens = torch.randint(0, case["vocab"], (case["batch"], case["seq"] + 1))
    if peer.startswith("nested_learning"):
        variant = "hope_selfmod" if peer.endswith("hope_selfmod") else "transformer"
        model = nested_learning_model(case, variant)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
        return lambda: nested_learning_step(model, opt, tokens[:, :-1])
    if peer == "titans_pytorch_mac":
        from titans_pytorch import MemoryAsContextTransformer
        model = MemoryAsContextTransformer(
            num_tokens=case["vocab"], dim=case["dim"], depth=case["layers"], segment_len=64,
            num_persist_mem_tokens=4, num_longterm_mem_tokens=16, heads=case["heads"],
            dim_head=case["dim"] // case["heads"])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))

        def run():
            loss = model(tokens, return_loss=True)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()
        return run
    raise SystemExit(f"unknown peer {peer!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    case = CASES[args.case]
    t0 = time.perf_counter()
    run = build(case)
    setup_s = time.perf_counter() - t0
    step_s = median_step_s(run, args.steps)
    print(json.dumps(dict(side="peer", peer=case["peer"], case=args.case, step_s=step_s,
                          setup_s=setup_s, tokens_per_s=case["batch"] * case["seq"] / step_s,
                          torch=torch.__version__, threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
