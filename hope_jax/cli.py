"""`hope-jax`: the command line.

    hope-jax train    --config=experiments/configs/hope.py:tiny [--config.optim.lr=1e-3 …] --workdir=DIR
    hope-jax eval     --workdir=DIR [--tasks=bpb,niah,memorization,mqar,zero_shot] [--zero_shot=FILE.jsonl,…]
    hope-jax generate --workdir=DIR [--prompt=TEXT] [--max_tokens=N] [--temperature=T] [--top_k=K] [--top_p=P]
    hope-jax data prepare --config=…    (download, tokenize and cache the corpus; runs once)

Without --config the embedded default is used (`hope_jax.config.default_config()`: a tiny Hope on
the pip-only English corpus). Every config is validated before anything compiles; an unknown key or
a bad value exits with status 2 and a message naming the key.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from hope_jax.config import ConfigError, validate

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "config", "experiments.py")
COMMANDS = ("train", "eval", "generate", "data")
EVAL_TASKS = ("bpb", "niah", "memorization", "mqar", "zero_shot")

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the flags (once). config_flags reads sys.argv's --config.* overrides here, so
    unknown keys must have been rejected before (see `_unknown_override`)."""
    if "config" in FLAGS:
        return
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config file[:argument].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard logs, plots. "
                        "Default: workdirs/<arch>-<size>.")
    flags.DEFINE_string("prompt", None, "generate: prompt text (default config.sample.prompt).")
    flags.DEFINE_integer("max_tokens", None, "generate: tokens to sample.")
    flags.DEFINE_float("temperature", None, "generate: softmax temperature (0 = greedy).")
    flags.DEFINE_integer("top_k", None, "generate: keep the k most likely tokens (0 = off).")
    flags.DEFINE_float("top_p", None, "generate: nucleus sampling mass (1 = off).")
    flags.DEFINE_integer("seed", None, "generate / eval: random seed.")
    flags.DEFINE_list("tasks", ["bpb", "niah", "memorization"], f"eval: tasks among {EVAL_TASKS}.")
    flags.DEFINE_list("zero_shot", [], "eval: jsonl files (LAMBADA / HellaSwag / PIQA style).")
    flags.DEFINE_list("niah_lengths", ["64", "128", "256"], "eval: NIAH context lengths (tokens).")
    flags.DEFINE_list("niah_depths", ["0.1", "0.5", "0.9"], "eval: NIAH needle depths.")
    flags.DEFINE_string("niah_task", "passkey", "eval: passkey | number | uuid.")
    flags.DEFINE_integer("niah_samples", 8, "eval: prompts per NIAH cell.")
    flags.DEFINE_integer("eval_batches", 16, "eval: held-out batches for bpb.")
    flags.DEFINE_integer("mqar_steps", 300, "eval: MQAR training steps (a fresh model of the "
                         "checkpoint's architecture).")


def _enable_compilation_cache() -> None:
    """jax's persistent compilation cache (HOPE_JAX_COMPILATION_CACHE, default
    ~/.cache/hope_jax/jax_cache; empty = off): a second run skips most XLA compile time."""
    path = os.environ.get("HOPE_JAX_COMPILATION_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "hope_jax", "jax_cache"))
    if path:
        import jax
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _fail(message: str) -> None:
    print(f"hope-jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def _workdir(config) -> str:
    return FLAGS.workdir or os.path.join("workdirs", f"{config.model.arch}-{config.model.size}")


def _config():
    config = FLAGS.config
    try:
        import jax
        validate(config, device_count=jax.device_count(), process_count=jax.process_count())
    except ConfigError as err:
        _fail(str(err))
    return config


def cmd_train() -> None:
    config = FLAGS.config
    if config.distributed.enabled:  # before any other jax call (device counts need it)
        from hope_jax.train import maybe_initialize
        maybe_initialize(config.distributed)
    config = _config()
    from hope_jax.train import train
    workdir = _workdir(config)
    result = train(config, workdir)
    if _is_main():
        summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
        with open(os.path.join(workdir, "result.json"), "w") as f:
            json.dump(summary, f, indent=1)
        bpb = result.get("bpb")
        print(f"step {result.get('step')}: training loss {result.get('loss', float('nan')):.4f}, "
              f"held-out bits per byte {bpb if bpb is None else round(float(bpb), 4)}, "
              f"{result.get('tokens_per_s', 0):,.0f} tokens/s ({result.get('stopped')}); "
              f"summary in {os.path.join(workdir, 'result.json')}")


def _is_main() -> bool:
    import jax
    return jax.process_index() == 0


def cmd_data(args: Sequence[str]) -> None:
    if list(args) != ["prepare"]:
        _fail("usage: hope-jax data prepare --config=FILE[:ARG]")
    config = _config()
    from hope_jax import data
    t0 = time.perf_counter()
    prepared = data.prepare(config.data, progress=True)
    print(f"prepared {config.data.corpus} ({config.data.tokenizer} tokenizer, vocabulary "
          f"{prepared.tokenizer.vocab_size}) in {time.perf_counter() - t0:.1f} s: {prepared.root}")
    for name, split in prepared.splits.items():
        print(f"  {name:6s} {split.documents:6d} documents {split.tokens:12,d} tokens "
              f"{split.bytes:12,d} bytes")


def _load(workdir: str):
    from hope_jax.train import load_for_inference
    try:
        return load_for_inference(workdir)
    except FileNotFoundError as err:
        _fail(f"{err} (train first: hope-jax train --workdir={workdir})")


def cmd_generate() -> None:
    import jax
    import numpy as np
    from hope_jax.sampling import generate
    workdir = FLAGS.workdir or _fail("generate needs --workdir (a trained run)")
    model, tok, config = _load(workdir)
    s = config.sample
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    prompt = pick(FLAGS.prompt, s.prompt)
    ids = np.asarray(tok.encode(prompt), np.int32)
    if ids.size == 0:
        ids = np.asarray([tok.bos_id], np.int32)
    out = generate(model, ids[None], pick(FLAGS.max_tokens, s.max_tokens),
                   jax.random.PRNGKey(pick(FLAGS.seed, s.seed)),
                   temperature=pick(FLAGS.temperature, s.temperature),
                   top_k=pick(FLAGS.top_k, s.top_k), top_p=pick(FLAGS.top_p, s.top_p))
    print(prompt + tok.decode(np.asarray(out[0])))


def _documents(prepared, split: str, limit: int):
    """The first `limit` documents of a split as token arrays (from the shard's offsets)."""
    import numpy as np
    with open(os.path.join(prepared.root, f"{split}.json")) as f:
        offsets = json.load(f)["offsets"]
    tokens = prepared.tokens(split)
    ends = list(offsets[1:]) + [len(tokens)]
    return [np.asarray(tokens[a:b]) for a, b in list(zip(offsets, ends))[:limit]]


def cmd_eval() -> None:
    import numpy as np
    from hope_jax import data, eval as ev
    workdir = FLAGS.workdir or _fail("eval needs --workdir (a trained run)")
    unknown = sorted(set(FLAGS.tasks) - set(EVAL_TASKS))
    if unknown:
        _fail(f"--tasks: unknown {unknown}; expected some of {EVAL_TASKS}")
    if "zero_shot" in FLAGS.tasks and not FLAGS.zero_shot:
        _fail("--tasks=zero_shot needs --zero_shot=FILE.jsonl[,FILE…]")
    for path in FLAGS.zero_shot:
        if not os.path.isfile(path):
            _fail(f"--zero_shot: no such file {path}")
    model, tok, config = _load(workdir)
    prepared = data.prepare(config.data, progress=False)
    T, seed = int(config.data.seq_len), FLAGS.seed or 0
    token_bytes = np.asarray(tok.token_bytes())
    results: dict = {"workdir": os.path.abspath(workdir), "model": config.model.arch + "-" +
                     config.model.size}
    if "bpb" in FLAGS.tasks:
        batches = data.eval_batches(prepared, "valid", seq_len=T, batch_size=8,
                                    max_batches=FLAGS.eval_batches)
        results["bpb"] = ev.bits_per_byte(model, batches, token_bytes, progress=True)
        print(f"held-out bits per byte {results['bpb']['bpb']:.4f}  "
              f"(perplexity per token {results['bpb']['ppl']:.2f})")
    if "niah" in FLAGS.tasks:
        lengths = [int(x) for x in FLAGS.niah_lengths]
        depths = [float(x) for x in FLAGS.niah_depths]
        grid = ev.niah_grid(model, tok, lengths, depths, task=FLAGS.niah_task,
                            n_samples=FLAGS.niah_samples, seed=seed, progress=True,
                            instruction=min(lengths) >= 256)
        results["niah"] = dict(task=FLAGS.niah_task, lengths=lengths, depths=depths,
                               accuracy=np.asarray(grid).tolist())
        print(f"NIAH ({FLAGS.niah_task}) accuracy, rows = lengths {lengths}, columns = depths "
              f"{depths}:\n{np.asarray(grid).round(2)}")
    if "memorization" in FLAGS.tasks:
        docs = _documents(prepared, "valid", 8)
        results["memorization"] = ev.memorization_bpb(model, docs, token_bytes, chunk_len=T,
                                                      progress=True)
        m = results["memorization"]
        print(f"test-time memorisation: bpb {m['off']['bpb']:.4f} (memory reset per document) "
              f"vs {m['on']['bpb']:.4f} (carried across documents)")
    if "mqar" in FLAGS.tasks:
        from hope_jax.config import decoder_config
        _, res = ev.train_mqar(decoder_config(config, 256), steps=FLAGS.mqar_steps, seed=seed,
                               progress=True)
        results["mqar"] = dict(accuracy=res["accuracy"], final_loss=float(res["losses"][-1]))
        print(f"MQAR accuracy {res['accuracy']:.3f} after {FLAGS.mqar_steps} steps")
    for path in FLAGS.zero_shot:
        r = ev.evaluate_jsonl(model, tok, path, progress=True)
        results.setdefault("zero_shot", {})[os.path.basename(path)] = r
        print(f"{os.path.basename(path)}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, float)))
    out = os.path.join(workdir, "eval", "results.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1, default=float)
    print(f"results: {out}")


def _run(command: str, argv: Sequence[str]) -> None:
    rest = list(argv[1:])
    if command == "data":
        return cmd_data(rest)
    if rest:
        _fail(f"unexpected arguments {rest}")
    {"train": cmd_train, "eval": cmd_eval, "generate": cmd_generate}[command]()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2)
    command = argv[1]
    args = [f"hope-jax {command}"] + argv[2:]
    unknown = _unknown_override(args)
    if unknown:
        _fail(unknown)
    _define_flags()
    try:
        rest = FLAGS(args)
    except flags.Error as err:  # e.g. --config.optim.lr=fast, --no-such-flag
        _fail(str(err))
    except (AttributeError, KeyError) as err:  # an override of a key the config does not have
        _fail(_unknown_override(args) or f"bad --config override ({err})")
    _enable_compilation_cache()
    _run(command, rest)


def _unknown_override(args: Sequence[str]) -> str | None:
    """Names the first `--config.a.b=…` whose key is not in the schema."""
    from hope_jax.config import default_config
    for arg in args:
        if not arg.startswith("--config."):
            continue
        node, path = default_config(), arg[2:].split("=", 1)[0].split(".")[1:]
        for i, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node:
                group = ".".join(["config"] + path[:i])
                known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else ""
                return (f"--{'.'.join(['config'] + path)}: unknown key {key!r} in {group}"
                        + (f" (known: {known})" if known else ""))
            node = node[key]
    return None


if __name__ == "__main__":
    main()
