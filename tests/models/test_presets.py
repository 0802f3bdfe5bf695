"""Paper-size presets build abstractly and have the parameter counts of their names (±10%).

Counted with scan_blocks=True (the blocks' parameters stacked: the same count, one traced block
instead of 24; test_scanned_and_unrolled_counts_agree)."""
import dataclasses

import pytest

from hope_jax.models import abstract_model, count_params, get_config

NOMINAL = {"340m": 340e6, "760m": 760e6, "1.3b": 1.3e9}


@pytest.mark.parametrize("arch", ["transformer", "titans_lmm"])
@pytest.mark.parametrize("size", sorted(NOMINAL))
def test_parameter_count_within_ten_percent(arch, size):
    n = count_params(abstract_model(dataclasses.replace(get_config(arch, size), scan_blocks=True)))
    assert abs(n / NOMINAL[size] - 1) <= 0.10, f"{arch}-{size}: {n / 1e6:.1f}M"


@pytest.mark.fast
def test_transformer_pp_count_is_exact():
    """340M Transformer++: 24 × (4d² + 3·d·2752) + 2·V·d + (2·24 + 1)·d."""
    d, f, v = 1024, 2752, 32000
    want = 24 * (4 * d * d + 3 * d * f + 2 * d) + 2 * v * d + d
    assert count_params(abstract_model(get_config("transformer", "340m"))) == want


@pytest.mark.parametrize("arch", ["transformer", "titans_lmm", "hope"])
def test_scanned_and_unrolled_counts_agree(arch):
    cfg = get_config(arch, "small")
    assert (count_params(abstract_model(cfg))
            == count_params(abstract_model(dataclasses.replace(cfg, scan_blocks=True))))
