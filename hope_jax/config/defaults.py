"""The experiment config schema: every key a run accepts, with its default.

An experiment file in `experiments/configs/` starts from `default_config()` and changes values; it
never adds keys (the config is locked, so an unknown key is an error that names it). The groups:

  model  — which architecture and size preset, dtypes, remat, Table-6 switches (Hope only)
  data   — corpus, tokenizer, sequence length, shards and the grain pipeline
  optim  — the outer optimizer (AdamW, Muon, M3, delta momentum, DMGD), warm-up + cosine,
           clipping, weight-decay mask,
           multi-frequency CMS updates (D9/D23), gradient accumulation
  train  — steps, batch, seeds, logging, held-out evaluation, checkpoints, NaN policy
  mesh   — device mesh axes data / fsdp / tensor / sequence (-1 = fill with the rest)
  distributed — jax.distributed initialisation (multi-host)
  sample — what `hope-jax generate` and the end of `make train` print
"""
from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict


# Kept as one function (issue 20): it is the config table, one documented field a line; splitting
# it by section would scatter the defaults, which read top to bottom as one table.
def default_config() -> ConfigDict:
    c = ConfigDict()

    c.model = ConfigDict(dict(
        arch="hope",              # hope | hope_attention | transformer | titans_lmm | titans_mag |
                                  # titans_mal | linear_attention | deltanet | gated_deltanet |
                                  # ttt_linear | ttt_mlp (hope_jax.models.presets)
        size="tiny",              # tiny | small | 340m | 760m | 1.3b
        dtype="float32",          # compute: float32 | bfloat16 (params, memory state stay float32)
        param_dtype="float32",
        remat="none",             # none | block (jax.checkpoint each block) | full (the model a
                                  # segment of the sequence at a time; models/decoder.py)
        remat_segment=0,          # remat=full: segment length (0: T/4 or T/2, whole chunks)
        loss_chunk=0,             # > 0: output head + loss this many positions at a time, so the
                                  # [B, T, V] logits never exist whole (0 = all at once)
        tie_embeddings=False,
        scan_blocks=False,        # identical blocks run with nnx.scan (deep models compile faster)
        # In-context CMS levels' inner objective: surrogate (D9) | next_token (NL Sec. 7.1: GD on
        # the next-token loss of each chunk, outer gradient through it; docs/continual.md)
        cms_objective="surrogate",
        cms_next_token_lr=0.03,   # the next-token inner step
        # Shape overrides of the size preset (0 = the preset's value).
        d_model=0,
        num_blocks=0,
        num_heads=0,              # every mixer's heads; d_model must be a multiple
        chunk_size=0,             # memory chunk C of Titans / the linear baselines
        chunk_other=0,            # Hope C_oth (k, v, η, α memories; D12)
        chunk_memory=0,           # Hope C_mem (output memory; D12: a multiple of C_oth)
        mlp_hidden=0,             # the MLP slot's SwiGLU width (every CMS level's with a CMS)
        scan_group=0,             # memory scans (self-modifying, Titans, in-context CMS) keep
                                  # one state per G chunks in the backward (0: preset; grouped_scan)
        # Softmax attention (Transformer++, Hope-Attention, the SWA of Titans MAG / MAL).
        attention="auto",         # auto | dense | xla | cudnn | pallas (layers/attention.py)
        attention_block=0,        # query / key block of the blockwise form (0 = 512)
        # Hope Table-6 switches (NL Table 6, D14); ignored by other architectures.
        switches=ConfigDict(dict(dgd=True, momentum=True, retention=True, cms=True,
                                 adaptive_k=True, adaptive_v=True, adaptive_q=False,
                                 objective="l2")),
    ))

    c.data = ConfigDict(dict(
        corpus="en_pip",          # en_pip (default, pip only) | python_stdlib |
                                  # japanese | files | hf_dataset (docs/data.md)
        files=(),                 # with corpus="files": text / jsonl / parquet paths (or globs)
        text_field="text",        # jsonl / parquet column holding the text
        hf_dataset="",            # corpus="hf_dataset": a Hugging Face dataset name or a local
                                  # dataset folder, streamed (needs `datasets`)
        hf_config="",             # hf_dataset: its configuration name (e.g. "sample-10BT")
        held_out_fraction=0.02,   # files corpus only: fraction of whole documents held out
        tokenizer="byte",         # byte | bpe (sentencepiece, trained offline on the corpus)
        vocab_size=8192,          # bpe only; byte vocabulary is 256 + 4 specials
        seq_len=64,               # training context T (overrides the preset's max_len)
        cache_dir="~/.cache/hope_jax",  # downloaded sources, tokenizers and token shards
        shuffle_seed=0,
        worker_count=0,           # grain worker processes (0 = in-process)
        max_bytes=4_000_000,      # python_stdlib only: cap on the text taken from the stdlib
        tokenizer_path="",        # bpe: an existing sentencepiece tokenizer.model, used instead of
                                  # training one (vocab_size is then the model's)
        prepared_dir="",          # ArrayRecord shards written by `hope-jax data prepare` (local or
                                  # gs://…): train / eval / generate read them (docs/data.md)
        prepare_workers=-1,       # `data prepare` tokenizer processes (-1 = auto: CPUs ≤ 8 for
                                  # bpe, in-process for byte; 0 = in-process)
    ))

    c.optim = ConfigDict(dict(
        name="adamw",             # adamw | muon | m3 | delta_momentum | dmgd (optim/outer.py)
        lr=3e-3,
        warmup_steps=20,
        schedule="cosine",        # cosine | constant
        min_lr_ratio=0.1,         # cosine floor as a fraction of lr
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,         # matrices only (not norms, biases, gates, embeddings' norm)
        clip_norm=1.0,            # global-norm clipping (0 = off)
        grad_accum=1,             # micro-batches per step
        multi_frequency=True,     # CMS outer levels update every P steps with the mean gradient
        cms_lr_exponent=0.5,      # a period-P level steps P^γ as far (0: D23; 0.5 measured better:
                                  # docs/hope.md, "Slow levels' step size")
        decay_memory_init=False,  # weight decay also on meta-learned initial memories / gate heads
        momentum=0.95,            # β of muon, delta_momentum and dmgd
        ns_steps=5,               # Newton–Schulz iterations (muon, m3)
        fallback="adamw",         # muon, non-matrix leaves (embedding, head…): adamw | momentum
        m3_slow_period=16,        # m3: the slow momentum's update period f
        delta_gamma=1.0,          # delta_momentum: γ of the delta term
    ))

    c.train = ConfigDict(dict(
        steps=300,
        global_batch=16,          # sequences per optimizer step, over all processes
        seed=0,
        log_every=10,
        eval_every=100,           # held-out bits per byte every N steps (0 = only at the end)
        eval_batches=8,
        checkpoint_every=100,
        keep_checkpoints=3,
        max_bad_steps=5,          # stop after this many consecutive non-finite steps
        progress=True,            # progress bar on stderr
        peak_flops=0.0,           # MFU denominator in FLOP/s (0 = measure a matmul at start-up)
        init_from="",             # warm start: a run's workdir whose newest params seed this one
        stop_at=0,                # stop (with a checkpoint) once this step is reached, 0 = off;
                                  # the schedule still ends at `steps` (time-sliced jobs, tests)
        carried_memory=-1.0,      # fraction of each batch's rows (≤ 0.5) whose memory starts as
                                  # left by reading another row's window, not fresh (0 = D33
                                  # reset only; train/carried_memory.py); −1 = the architecture's
                                  # choice (config/arch_defaults.py: 0.5 for the Titans, 0
                                  # otherwise)
        poison_steps=(),          # tests of the NaN policy only: steps whose loss is made NaN
    ))

    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1))

    c.distributed = ConfigDict(dict(
        enabled=False,            # call jax.distributed.initialize (auto on TPU pods / SLURM)
        coordinator_address="",   # host:port of process 0 (GPU clusters); empty = auto-detect
        num_processes=0,          # 0 = auto-detect
        process_id=-1,            # -1 = auto-detect
    ))

    c.sample = ConfigDict(dict(prompt="ROMEO:", max_tokens=200, temperature=0.8, top_k=0,
                               top_p=0.95, seed=0))
    return c


def _set_recursive(cfg: ConfigDict, values: dict) -> None:
    for k, v in values.items():
        if k not in cfg:
            continue
        if isinstance(v, dict):
            _set_recursive(cfg[k], v)
        else:
            cfg[k] = tuple(v) if isinstance(v, list) else v


def config_from_dict(values: dict) -> ConfigDict:
    """`default_config()` with the (JSON) values of a saved config; unknown keys are dropped."""
    config = default_config()
    _set_recursive(config, values)
    return config


__all__ = ["ConfigDict", "config_from_dict", "default_config"]
