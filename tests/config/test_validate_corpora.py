"""Validation reads the runtime's corpus table (data/cache_key.py): `hf_dataset` is accepted
with a dataset name and refused without one, naming the key."""
from __future__ import annotations

import pytest

from hope_jax.config.defaults import default_config
from hope_jax.config.validate import ConfigError, validate
from hope_jax.data.cache_key import CORPORA


@pytest.mark.fast
def test_hf_dataset_corpus_validates():
    c = default_config()
    c.data.corpus = "hf_dataset"
    with pytest.raises(ConfigError, match="config.data.hf_dataset"):
        validate(c, device_count=1, process_count=1)
    c.data.hf_dataset = "someone/some_text"
    validate(c, device_count=1, process_count=1)
    c.data.corpus = "nope"
    with pytest.raises(ConfigError, match=f"expected one of {CORPORA!r}".replace("(", r"\(")
                       .replace(")", r"\)")):
        validate(c, device_count=1, process_count=1)
