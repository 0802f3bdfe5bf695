"""Hope and Hope-Attention (design §6.6, D11, D13, D13a, D20, D21).

A Hope block is the decoder's pre-norm block with self-modifying Titans in the mixer slot and a
CMS chain in the MLP slot:

    h ← h + W_O(RMSNorm_head(o) ⊙ σ(u W_gate)),  o from the self-modifying memories (§6.6)
    h ← h + CMS(RMSNorm(h))                        fastest level first (D10, D20)

Hope-Attention swaps the mixer for causal softmax attention with RoPE; with the CMS reduced to one
outer level of period 1 it is exactly Transformer++ (design §6.9, check 9).

`hope_block(arch, size, **switches)` gives the mixer and MLP-slot configs of a preset (the decoder
preset around them is `hope_jax.models.presets.hope_config`); the switches are the ablations of NL
Table 6 (D14): dgd, momentum, retention, cms, adaptive_k, adaptive_v, adaptive_q, objective.
"""
from __future__ import annotations

from hope_jax.layers.attention import AttentionConfig
from hope_jax.layers.cms import CMSConfig, CMSLevel
from hope_jax.layers.mlp import SwiGLUConfig
from hope_jax.layers.self_modifying import SelfModifyingConfig
from hope_jax.layers.sizes import SIZES, matched_swiglu

# (C_oth, C_mem) per size (D12, D13a) and the CMS rows of design §5.6 (chunks of outer levels are
# given as periods in outer steps: C = P · N_step).
MEMORY_CHUNKS = {"tiny": (4, 8), "small": (16, 64), "340m": (16, 64), "760m": (16, 64),
                 "1.3b": (16, 64)}
# The in-context level decays toward its θ_0 by CMS_RETENTION per write (D22 changed for a
# measured reason: with plain GD its state drifts with every chunk, and past the training length
# its writes made held-out bpb worse; docs/hope.md, "Stable writes that matter").
CMS_RETENTION = 0.9
# ... and scales each token's write by 1/(1 + ηρ_t), ρ_t the Gauss–Newton curvature of its local
# loss along its own gradient (changed for a measured reason: the per-layer rule ignores the
# Jacobian of the layers after each one, and once W_down had grown during MQAR training the
# level's weights went from 50 to 3·10²² in 32 tokens; docs/hope.md, "In-context CMS: the
# curvature step").
CMS_NORMALIZE = "curvature"
def _in_context(chunk: int) -> CMSLevel:
    return CMSLevel(chunk=chunk, normalize=CMS_NORMALIZE, retention=CMS_RETENTION)


CMS_LEVELS = {
    "tiny": (_in_context(8), CMSLevel(period=2), CMSLevel(period=8)),
    "small": (_in_context(16), CMSLevel(period=4), CMSLevel(period=16)),
    "paper": (_in_context(16), CMSLevel(period=2), CMSLevel(period=32)),
}
# The presets' inner step (D19 revised for a measured reason; docs/hope.md, "Stable writes that
# matter"). D19's gates with Eq. 88's key-normalised step η/(1+η‖k‖²) diverge within ~20–60 tokens
# of real text: that normalisation assumes an identity output Jacobian, while the residual MLP's
# curvature along its own gradient is ρ ≈ ‖σ(W₂k)‖² ≈ 0.4·hidden (27 at d_h = 16, 109 at 64), and
# momentum multiplies every correction by 1/(1 − β) ≈ 8. The old cure, η_max = 0.01, left the
# writes inert (switching them off changed held-out bpb by 0.1 %). The presets now keep D19's
# η_max = 1 and instead (i) divide each token's step by 1 + ηρ with the gradient's own curvature
# ρ = ‖G‖²/‖e‖² ("curvature": a token never corrects past its target, at any width; inside a
# chunk the step is also scaled by the share of its error the running state has left, μ_t), and
# (ii) dampen momentum, S = β S + (1 − β) u, so one token's correction adds up to at most 1× its
# step instead of 1/(1 − β)×. Unit-norm values stay (PRESET_NORMALIZE_VALUE).
PRESET_ETA_MAX = 1.0
PRESET_NORMALIZE = "curvature"
PRESET_MOMENTUM_DAMPENING = True
# Retention decays each memory toward its meta-learned initial state M_□,0, not toward 0: with
# decay to 0 the k/v/η/α memories lose M_□,0 at a rate α^t (α ≈ 0.993: 0.1 % left after 1K
# tokens), so beyond the training length the generated keys, values and gates drift out of
# distribution (docs/hope.md).
PRESET_RETAIN_TO_INIT = True
# Unit-norm values v = L2Norm(M_v(x̃_v)) in the presets: v is the input of every self-generated
# target M_□(v) (Eq. 84), and an unnormalised v makes the target path a positive feedback loop
# (measured first cause of the divergence; docs/hope.md).
PRESET_NORMALIZE_VALUE = True
# The output memory is a matrix M_out = W q starting at W = 0 and fitting v itself (D11 and Eq. 85
# changed for a measured reason: every Hope that learnt MQAR (T 128, 16 pairs; up to 0.95) used
# it, and the tiny training step with it is 1.44× faster than with D11's residual MLP and the
# self-generated target (interleaved A/B); docs/hope.md, "Recall (MQAR)").
PRESET_OUT_MEMORY = "matrix"
PRESET_OUT_TARGET = "value"
# The CMS levels all read z_0 and add Σ_ℓ w_ℓ F_ℓ(z_0) (Eq. 74's independent wiring, not D20's
# chain; changed for a measured reason: the chain feeds each SwiGLU the growing sum of the ones
# before, its output at init is 3.3× one SwiGLU's, and a Hope with it stays at chance on MQAR
# (0.013) where the same model with independent levels reaches 0.92; docs/hope.md, "The CMS
# chain's gain").
CMS_VARIANT = "independent"
ABLATIONS = ("dgd", "momentum", "retention", "cms", "adaptive_k", "adaptive_v", "adaptive_q",
             "objective")


def cms_config(size: str, enabled: bool = True, mixer=None) -> CMSConfig | SwiGLUConfig:
    """The CMS of a size (design §5.6); `enabled=False` is the "w/o CMS" ablation: one SwiGLU of
    width roundup_64((8/3)·d) (D20).

    At paper sizes the level width is matched so that a Hope block has the parameters of a
    Transformer++ block (the self-modifying mixer costs more than attention), as the baselines'
    MLPs are; on CPU sizes it is D20's roundup_64((8/3)·d/K).
    """
    s = SIZES[size]
    if not enabled:
        if not s.param_matched:
            return SwiGLUConfig()
        return SwiGLUConfig(hidden=matched_swiglu(mixer, s).hidden)
    levels = CMS_LEVELS.get(size, CMS_LEVELS["paper"])
    hidden = None
    if s.param_matched and mixer is not None:
        d, k = s.d_model, len(levels)
        in_context = sum(lvl.in_context for lvl in levels)
        budget = 3 * d * matched_swiglu(mixer, s).hidden - in_context * (d * d + 1)
        hidden = max(64, int(round(budget / (3 * d * k) / 64)) * 64)
    return CMSConfig(levels=levels, hidden=hidden, variant=CMS_VARIANT)


def hope_block(arch: str = "hope", size: str = "tiny", **switches
               ) -> tuple[SelfModifyingConfig | AttentionConfig, CMSConfig | SwiGLUConfig]:
    """(mixer, MLP slot) of "hope" or "hope_attention" at a size, with Table-6 ablation switches."""
    if arch not in ("hope", "hope_attention"):
        raise ValueError(f"unknown Hope arch {arch!r}; expected 'hope' or 'hope_attention'")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    unknown = set(switches) - set(ABLATIONS) - {"eta_max", "eta_bias", "alpha_bias", "beta_bias",
                                                "normalize_value", "normalize",
                                                "momentum_dampening", "retain_to_init",
                                                "out_memory", "out_target"}
    if unknown:
        raise ValueError(f"unknown Hope switches {sorted(unknown)}; expected some of {ABLATIONS}")
    s = SIZES[size]
    cms_on = switches.pop("cms", True)
    if arch == "hope":
        c_oth, c_mem = MEMORY_CHUNKS[size]
        switches.setdefault("eta_max", PRESET_ETA_MAX)
        switches.setdefault("normalize", PRESET_NORMALIZE)
        switches.setdefault("momentum_dampening", PRESET_MOMENTUM_DAMPENING)
        switches.setdefault("retain_to_init", PRESET_RETAIN_TO_INIT)
        switches.setdefault("normalize_value", PRESET_NORMALIZE_VALUE)
        switches.setdefault("out_memory", PRESET_OUT_MEMORY)
        switches.setdefault("out_target", PRESET_OUT_TARGET)
        mixer = SelfModifyingConfig(num_heads=s.num_heads, chunk_other=c_oth, chunk_memory=c_mem,
                                    **switches)
    else:
        if switches:
            raise ValueError(f"hope_attention has no memory switches, got {sorted(switches)}")
        mixer = AttentionConfig(num_heads=s.num_heads)
    return mixer, cms_config(size, cms_on, mixer)
