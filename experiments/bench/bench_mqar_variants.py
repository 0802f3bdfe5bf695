"""MQAR accuracy of Hope's switches and of baselines at one budget (JSON out).

    python experiments/bench/bench_mqar_variants.py --variants preset,out_value --steps 600
    python experiments/bench/bench_mqar_variants.py --variants gated_deltanet,preset --pairs 8

Each variant trains a fresh tiny model on MQAR (`hope_jax.eval.memory_probe.mqar_probe`: AdamW,
warm-up and cosine, held-out accuracy with the in-context writes on and off) and reports its
loss curve, accuracy and wall time. A variant is either a baseline arch name or one of VARIANTS:
Hope's preset with some mixer switches changed (`hope_jax.models.presets.with_switches`), so that
one run isolates one cause. Writes experiments/bench/results/<--out>.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from results_json import write_results  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# Hope's preset with one mechanism changed each (SelfModifyingConfig fields).
VARIANTS = {
    "preset": {},
    "out_value": dict(out_target="value"),        # M_out fits v itself (D18), not M_out(v)
    "static_kv": dict(adaptive_k=False, adaptive_v=False),  # k, v from projections (D14)
    "no_momentum": dict(momentum=False),
    "no_retention": dict(retention=False),
    "no_dgd": dict(dgd=False),
    "eta_hot": dict(eta_bias=2.0),               # η ≈ 0.88 at init instead of 0.12
    "key_step": dict(normalize=True),            # D3's η/(1 + η‖k‖²), not the curvature step
    "out_matrix": dict(out_memory="matrix"),     # M_out = W q from W = 0 (DeltaNet's memory)
    "out_mlp": dict(out_memory="mlp", out_target="self"),  # D11's residual MLP, Eq. 85's target
    "undamped": dict(momentum_dampening=False),  # S = β S + u instead of the average
    "no_cms": None,                              # the MLP slot is one SwiGLU (Table 6's w/o CMS)
    "cms_frozen": None,                          # the in-context CMS level never writes
    "cms_outer": None,                           # the CMS chain with 3 outer levels of period 1
    "cms_independent": None,                     # the preset levels wired independently (Eq. 74)
    "cms_norm": None,                            # the chain with per-level pre-norms (D20)
    "cms_chain": None,                           # D20's chain z_ℓ = z_{ℓ−1} + F_ℓ(z_{ℓ−1})
}


def model_config(variant: str, seq_len: int):
    from hope_jax.config.build import decoder_config
    from hope_jax.config.experiments import experiment_config
    from hope_jax.layers.cms import CMSLevel, without_surrogate_writes
    from hope_jax.layers.hope import cms_config
    from hope_jax.models.presets import with_switches
    arch = "hope" if variant in VARIANTS or "+" in variant else variant
    c = experiment_config(arch, "tiny")
    c.data.seq_len = seq_len
    cfg = decoder_config(c, 260)
    if arch == "hope":
        switches = {}
        for part in variant.split("+"):
            if part not in VARIANTS:
                raise SystemExit(f"unknown variant {part!r}; expected an arch or {list(VARIANTS)}")
            if part == "no_cms":
                cfg = dataclasses.replace(cfg, mlp=cms_config("tiny", enabled=False))
            elif part == "cms_frozen":
                cfg = dataclasses.replace(cfg, mlp=without_surrogate_writes(cfg.mlp))
            elif part == "cms_outer":
                levels = (CMSLevel(period=1),) * len(cfg.mlp.levels)
                cfg = dataclasses.replace(cfg, mlp=dataclasses.replace(cfg.mlp, levels=levels))
            elif part == "cms_independent":
                cfg = dataclasses.replace(cfg, mlp=dataclasses.replace(cfg.mlp,
                                                                       variant="independent"))
            elif part in ("cms_norm", "cms_chain"):
                cfg = dataclasses.replace(cfg, mlp=dataclasses.replace(
                    cfg.mlp, variant="sequential", level_norm=part == "cms_norm"))
            else:
                switches.update(VARIANTS[part])
        cfg = with_switches(cfg, **switches)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="preset,out_value",
                    help="comma list: baseline archs and/or Hope variants; join with + to combine")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seq_len", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="mqar_variants")
    args = ap.parse_args()
    from hope_jax.eval.memory_probe import mqar_probe
    rows = []
    for variant in args.variants.split(","):
        cfg = model_config(variant, args.seq_len)
        t0 = time.perf_counter()
        res = mqar_probe(cfg, steps=args.steps, seq_len=args.seq_len, num_kv_pairs=args.pairs,
                         batch_size=args.batch, lr=args.lr, seed=args.seed, progress=True)
        res.update(variant=variant, wall_s=time.perf_counter() - t0)
        rows.append(res)
        print(f"{variant}: acc on {res['on']:.3f} off {res['off']:.3f} "
              f"loss {res['final_loss']:.3f} skipped {res['skipped_steps']} "
              f"({res['wall_s']:.0f} s)", flush=True)
        write_results(os.path.join(RESULTS, f"{args.out}.json"), args, rows)


if __name__ == "__main__":
    main()
