"""Training defaults that depend on the architecture, resolved after every override.

A size preset (`experiments.py`) is chosen before the command line is read, so a setting that
suits one architecture cannot live there: `--config.model.arch=titans_mac` would keep the default
built for Hope. Such settings default to −1 ("the architecture's choice") and are resolved here,
from the final `model.arch`.
"""
from __future__ import annotations

from typing import Any

# train.carried_memory = −1 → this fraction of the rows starts from a carried memory
# (docs/training.md, "Carried-memory training"). Measured on the tiny recipe at 2,000 steps: for
# the four Titans, carrying a memory across documents costs less (memorisation gain LMM −0.040 →
# −0.013, MAC −0.102 → +0.0001 with its preset gate, MAG −0.021 → −0.006, MAL −0.026 → −0.010)
# and the writes matter as much or more (ablation at 4× T LMM +0.085 → +0.170, MAG +0.143 →
# +0.203, MAL +0.325 → +0.337; MAC's σ-on-attention gate needs it, D26), at the same bpb. Hope
# gains nothing from it (+0.0001 ± 0.0006) and loses 0.016 bpb, so it keeps D33's reset, as do
# the models without memory.
CARRIED_MEMORY = {"titans_lmm": 0.5, "titans_mac": 0.5, "titans_mag": 0.5, "titans_mal": 0.5}


def carried_memory_fraction(config: Any) -> float:
    """`train.carried_memory` with −1 resolved for `model.arch`."""
    f = float(config.train.get("carried_memory", 0.0))
    return CARRIED_MEMORY.get(config.model.arch, 0.0) if f == -1 else f


__all__ = ["CARRIED_MEMORY", "carried_memory_fraction"]
