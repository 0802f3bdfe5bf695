"""The Hope presets' inner-memory settings (docs/hope.md, "Decisions and measured deviations")."""
import pytest

from hope_jax.layers import hope
from hope_jax.layers.self_modifying import SelfModifyingConfig
from hope_jax.models.presets import hope_config


@pytest.mark.fast
def test_hope_presets_normalise_values():
    """Hope presets use unit-norm values and PRESET_ETA_MAX; the mixer config keeps Eq. 84 as
    printed (unnormalised v, D19's η_max = 1) unless asked; the switch overrides the preset."""
    for size in ("tiny", "small"):
        mixer = hope_config("hope", size).mixers[0]
        assert mixer.normalize_value is hope.PRESET_NORMALIZE_VALUE is True
        assert mixer.eta_max == hope.PRESET_ETA_MAX
        assert mixer.level().normalize_value
    assert not SelfModifyingConfig(num_heads=2).level().normalize_value
    assert SelfModifyingConfig(num_heads=2).eta_max == 1.0
    off = hope_config("hope", "tiny", normalize_value=False).mixers[0]
    assert not off.normalize_value and not off.level().normalize_value
