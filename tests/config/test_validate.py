"""Config validation: each bad config is rejected before compiling, naming the culprit key."""
from __future__ import annotations

import importlib
import importlib.util
import pathlib

import pytest

from hope_jax.config import (ConfigDict, ConfigError, decoder_config, default_config, resolve_mesh,
                             validate)
from hope_jax.config.arch_defaults import carried_memory_fraction

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _with(dotted: str, value):
    """default_config() with one value set, as a config file could write it (any type, any key)."""
    tree = default_config().to_dict()
    *groups, key = dotted.split(".")
    node = tree
    for g in groups:
        node = node[g]
    node[key] = value
    return ConfigDict(tree)


BAD = [  # (key, value, text the message must contain)
    ("optim.learning_rate", 1e-3, "config.optim.learning_rate: unknown key"),
    ("model.widht", 128, "config.model.widht: unknown key"),
    ("optim.lr", "fast", "config.optim.lr: expected float, got str"),
    ("train.steps", 10.5, "config.train.steps: expected int"),
    ("train.progress", 1, "config.train.progress: expected bool"),
    ("model.arch", "gpt5", "config.model.arch: expected one of"),
    ("model.size", "huge", "config.model.size"),
    ("model.dtype", "float16", "config.model.dtype"),
    ("model.remat", "offload", "config.model.remat: expected one of ('none', 'block', 'full')"),
    ("model.remat_segment", 8, "config.model.remat_segment: is used only with model.remat='full'"),
    ("optim.name", "sgd", "config.optim.name: expected one of"),
    ("data.tokenizer", "wordpiece", "config.data.tokenizer"),
    ("data.corpus", "files", "config.data.files"),
    ("data.seq_len", 1, "config.data.seq_len"),
    ("optim.lr", 0.0, "config.optim.lr: must be > 0"),
    ("optim.b2", 1.0, "config.optim.b2"),
    ("optim.schedule", "linear", "config.optim.schedule"),
    ("train.global_batch", 0, "config.train.global_batch"),
    ("sample.top_p", 0.0, "config.sample.top_p"),
    ("model.num_heads", 3,
     "config.model.num_heads: SelfModifyingConfig has 3 heads, which do not divide d_model=64"),
    ("model.chunk_memory", 6, "config.model.chunk_memory: the model cannot be built"),
    ("model.chunk_other", -2, "config.model.chunk_other"),
    ("model.attention", "flash", "config.model.attention: expected one of"),
    ("model.attention_block", -1, "config.model.attention_block"),
    ("data.vocab_size", 10, None),  # only checked for BPE: valid with bytes
    ("model.cms_objective", "task", "config.model.cms_objective: expected 'surrogate'"),
    ("model.cms_next_token_lr", 0.0, "config.model.cms_next_token_lr: must be > 0"),
    ("train.carried_memory", 0.75, "config.train.carried_memory: must be in [0, 0.5]"),
    ("train.carried_memory", -0.5, "config.train.carried_memory: must be in [0, 0.5]"),
]


def test_next_token_objective_needs_a_hope_cms_and_whole_chunks():
    config = default_config()
    config.model.cms_objective, config.data.seq_len = "next_token", 60  # chunk 8
    with pytest.raises(ConfigError, match="config.data.seq_len: model.cms_objective='next_token' "
                                          "needs a multiple of the in-context CMS chunk 8"):
        validate(config, device_count=1, process_count=1)
    config.model.arch, config.data.seq_len = "transformer", 64
    with pytest.raises(ConfigError, match="'next_token' needs a Hope arch with its CMS"):
        validate(config, device_count=1, process_count=1)
    config.model.arch = "hope"  # valid, and the surrogate writes are off
    validate(config, device_count=1, process_count=1)
    levels = decoder_config(config, 260).mlp.levels
    assert [lvl.eta_max for lvl in levels if lvl.in_context] == [0.0]


@pytest.mark.fast
def test_default_config_is_valid():
    assert validate(default_config(), device_count=1, process_count=1)["data"] == 1


@pytest.mark.fast
@pytest.mark.parametrize("arch, fraction", [("titans_mac", 0.5), ("titans_lmm", 0.5),
                                            ("hope", 0.0), ("titans_mal", 0.5),
                                            ("transformer", 0.0)])
def test_carried_memory_default_follows_the_final_arch(arch, fraction):
    """−1 resolves from model.arch as set last (a command-line override), and a value wins."""
    config = default_config()
    config.model.arch = arch
    assert config.train.carried_memory == -1
    assert carried_memory_fraction(config) == fraction
    config.train.carried_memory = 0.25
    assert carried_memory_fraction(config) == 0.25


@pytest.mark.fast
@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_bad_config_names_the_key(key, value, message):
    config = _with(key, value)
    if message is None:
        validate(config, device_count=1, process_count=1)
        return
    with pytest.raises(ConfigError) as err:
        validate(config, device_count=1, process_count=1)
    assert message in str(err.value), str(err.value)


def test_bpe_vocab_and_arch_specific_shape_checks():
    config = default_config()
    config.data.tokenizer, config.data.vocab_size = "bpe", 100
    with pytest.raises(ConfigError, match="config.data.vocab_size"):
        validate(config, device_count=1, process_count=1)
    config = default_config()
    config.model.arch, config.model.d_model, config.model.num_heads = "transformer", 60, 8
    with pytest.raises(ConfigError, match="AttentionConfig has 8 heads, which do not divide "
                                          "d_model=60"):
        validate(config, device_count=1, process_count=1)


@pytest.mark.parametrize("mesh,devices,message", [
    (dict(data=3), 8, "config.mesh: data=3 × fsdp=1 × tensor=1 × sequence=1 has 3 devices but 8"),
    (dict(data=-1, tensor=3), 8, "do not divide the 8 devices"),
    (dict(data=-1, fsdp=-1), 8, "at most one axis may be -1"),
    (dict(tensor=0), 8, "config.mesh.tensor: must be -1 (fill) or ≥ 1"),
])
def test_mesh_that_does_not_fit_the_devices(mesh, devices, message):
    config = default_config()
    for k, v in mesh.items():
        config.mesh[k] = v
    with pytest.raises(ConfigError) as err:
        validate(config, device_count=devices, process_count=1)
    assert message in str(err.value)


def test_batch_must_split_over_processes_microbatches_and_data_axes():
    config = default_config()
    config.train.global_batch = 6
    with pytest.raises(ConfigError, match="config.train.global_batch: the micro-batch of 6"):
        validate(config, device_count=4, process_count=1)
    with pytest.raises(ConfigError, match="does not split over 4 processes"):
        validate(config, device_count=4, process_count=4)
    config.optim.grad_accum = 4
    with pytest.raises(ConfigError, match="config.optim.grad_accum"):
        validate(config, device_count=1, process_count=1)


@pytest.mark.fast
def test_allowed_values_are_the_runtime_tables():
    """Validation reads the tables of the code that uses each value, so it cannot drift."""
    from hope_jax.data import ByteTokenizer, cache_key, tokenizers
    from hope_jax.models import decoder, presets
    from hope_jax.optim import outer
    from hope_jax.sharding import rules

    v = importlib.import_module("hope_jax.config.validate")  # `validate` is also the function
    assert v.ARCH_NAMES is presets.ARCH_NAMES and v.SIZES is presets.SIZES
    assert v.TRAINING_DTYPES is decoder.TRAINING_DTYPES and v.REMAT_MODES is decoder.REMAT_MODES
    assert v.OPTIMIZERS is outer.OPTIMIZERS and v.SCHEDULES is outer.SCHEDULES
    assert v.mesh_shape is rules.mesh_shape and v.check_batch is rules.check_batch
    assert presets.BYTE_VOCAB == ByteTokenizer.vocab_size  # the CPU sizes' default vocabulary
    for corpus in cache_key.CORPORA:
        config = default_config()
        config.data.corpus, config.data.files, config.data.hf_dataset = corpus, ["x.txt"], "x"
        assert not [e for e in v._value_errors(config) if "data.corpus" in e]
    for kind in tokenizers.TOKENIZER_KINDS:
        config = default_config()
        config.data.tokenizer = kind
        assert not [e for e in v._value_errors(config) if "data.tokenizer" in e]


def test_resolve_mesh_fills_the_minus_one_axis():
    config = default_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, -1, 2
    assert resolve_mesh(config.mesh, 8) == dict(data=2, fsdp=2, tensor=2, sequence=1)


def test_every_several_errors_are_reported_together():
    config = default_config()
    config.optim.lr, config.train.steps = -1.0, 0
    with pytest.raises(ConfigError) as err:
        validate(config, device_count=1, process_count=1)
    assert "config.optim.lr" in str(err.value) and "config.train.steps" in str(err.value)


@pytest.mark.parametrize("name,arg", [("hope", "tiny"), ("hope", "1.3b"), ("titans", "mal,small"),
                                      ("baselines", "gated_deltanet,340m"),
                                      ("transformer", "760m"), ("hope_attention", "tiny")])
def test_experiment_files_are_valid(name, arg):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "configs" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    validate(config, device_count=1 if config.train.global_batch < 8 else 8, process_count=1)
    cfg = decoder_config(config, 32000 if config.data.tokenizer == "bpe" else 260)
    assert cfg.max_len == config.data.seq_len


def test_shape_overrides_reach_the_mixers():
    config = default_config()
    config.model.arch = "titans_mag"
    config.model.num_heads, config.model.chunk_size, config.model.d_model = 2, 4, 32
    cfg = decoder_config(config, 260)
    (mixer,) = cfg.mixers
    assert cfg.d_model == 32
    assert mixer.memory.num_heads == mixer.attention.num_heads == 2
    assert mixer.memory.chunk_size == 4


@pytest.mark.fast
def test_attention_keys_reach_every_softmax_attention_only():
    """model.attention / attention_block set the kernel of Titans MAG's nested SWA and of
    Hope-Attention's attention, and leave the memory mixers' own `implementation` alone."""
    config = default_config()
    config.model.arch, config.model.attention, config.model.attention_block = "titans_mag", \
        "dense", 64
    (mixer,) = decoder_config(config, 260).mixers
    assert (mixer.attention.implementation, mixer.attention.block_size) == ("dense", 64)
    assert mixer.memory.implementation == "auto"
    config.model.arch = "hope_attention"
    cfg = decoder_config(config, 260)
    kinds = {type(m).__name__: m.implementation for m in cfg.mixers}
    assert kinds == {"AttentionConfig": "dense"}, kinds
    config.model.attention = "auto"  # the preset's choice stays
    assert decoder_config(config, 260).mixers[0].implementation == "auto"



@pytest.mark.fast
def test_scan_group_reaches_the_mixers_and_the_in_context_cms():
    """model.scan_group groups the saved states of the self-modifying scans and of the in-context
    CMS levels alike (the CMS level's plain scan held 64 % of small Hope's activations)."""
    config = default_config()
    config.model.arch, config.model.scan_group = "hope", 4
    cfg = decoder_config(config, 260)
    assert {m.scan_group for m in cfg.mixers} == {4}
    assert [lvl.scan_group for lvl in cfg.mlp.levels if lvl.in_context] == [4]


@pytest.mark.fast
def test_mlp_hidden_sets_the_swiglu_or_every_cms_level():
    """model.mlp_hidden is the MLP slot's width: the SwiGLU's, or every CMS level's; < 0 fails
    before anything is built."""
    config = default_config()
    config.model.arch, config.model.mlp_hidden = "hope", 96
    assert decoder_config(config, 260).mlp.hidden == 96
    config.model.arch = "transformer"
    assert decoder_config(config, 260).mlp.hidden == 96
    config.model.mlp_hidden = -1
    with pytest.raises(ConfigError, match="model.mlp_hidden"):
        validate(config)
