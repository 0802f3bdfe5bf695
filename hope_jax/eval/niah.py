"""Single-needle needle-in-a-haystack, RULER style (S-NIAH-1/2/3; NL Table 1).

One needle sentence "One of the special magic numbers for {key} is: {value}." sits at a chosen
depth (a fraction of the haystack) inside `length` tokens of haystack; the prompt ends with
"What is the special magic number for {key} mentioned in the provided text? The special magic
number for {key} is". The model answers by greedy decoding through `prefill` + `step`; a sample
is correct when the first word it generates equals the needle value exactly.

Tasks: "passkey" (S-NIAH-1: 5-digit value, default haystack the repeated RULER noise "The grass
is green. ..."), "number" (S-NIAH-2: 7-digit value), "uuid" (S-NIAH-3: a UUID). Pass natural
held-out text as `haystack` for S-NIAH-2/3 (RULER uses Paul Graham essays).
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from flax import nnx

from hope_jax.eval._protocols import Tokenizer
from hope_jax.eval._scoring import progress_bar
from hope_jax.eval.decode import greedy_decode

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
TASKS = ("passkey", "number", "uuid")
_ADJECTIVES = ("whimsical", "quiet", "amber", "brave", "crooked", "dusty", "eager", "frozen",
               "gentle", "hollow", "idle", "jolly", "lucky", "mellow", "noisy", "odd")
_NOUNS = ("apple", "harbor", "lantern", "meadow", "pebble", "river", "saddle", "thimble",
          "violin", "walnut", "anchor", "button", "candle", "falcon", "garden", "kettle")


class NiahExample(NamedTuple):
    """tokens int32[length]; needle_pos: index of the needle's first token; context_start /
    context_len: where the haystack (with the needle) sits; key, value: the needle."""

    tokens: np.ndarray
    needle_pos: int
    context_start: int
    context_len: int
    key: str
    value: str


def split_sentences(text: str) -> list[str]:
    """Splits text into sentences at ., ! or ? followed by whitespace (empty pieces dropped)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()]


def _needle(task: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(kind, key, value) for a task."""
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    if task == "passkey":
        return "number", key, str(rng.integers(10_000, 100_000))
    if task == "number":
        return "number", key, str(rng.integers(1_000_000, 10_000_000))
    if task == "uuid":
        return "uuid", key, str(uuid.UUID(bytes=rng.bytes(16), version=4))
    raise ValueError(f"unknown NIAH task {task!r}; expected one of {TASKS}")


def make_niah_example(tokenizer: Tokenizer, length: int, depth: float, task: str = "passkey",
                      rng: np.random.Generator | None = None, haystack: str | None = None,
                      add_bos: bool = True, instruction: bool = True) -> NiahExample:
    """A prompt of exactly `length` tokens with the needle at `depth` ∈ [0, 1] of the haystack.

    The needle goes in at the sentence boundary nearest to depth · (haystack tokens), so it is
    within one sentence of the requested depth; the haystack is cut to fit the token budget
    (its last sentence may be truncated). Natural haystacks start at a random sentence.
    `instruction=False` drops RULER's opening instruction line (≈ 140 bytes) for short contexts.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    rng = np.random.default_rng(0) if rng is None else rng
    kind, key, value = _needle(task, rng)
    sentences = split_sentences(NOISE if haystack is None else haystack)
    if not sentences:
        raise ValueError("the haystack text has no sentences")
    enc = lambda s: np.asarray(tokenizer.encode(s), np.int32)
    head = enc(f"Some special magic {kind}s are hidden within the following text. Make sure to "
               f"memorize it. I will quiz you about the {kind}s afterwards.\n"
               if instruction else "")
    if add_bos:
        head = np.concatenate([np.asarray([tokenizer.bos_id], np.int32), head])
    needle = enc(f" One of the special magic {kind}s for {key} is: {value}.")
    query = enc(f"\nWhat is the special magic {kind} for {key} mentioned in the provided text? "
                f"The special magic {kind} for {key} is")
    budget = length - len(head) - len(needle) - len(query)
    if budget < 1:
        raise ValueError(f"NIAH length {length} is too short for this tokenizer: the prompt "
                         f"scaffolding and needle take {length - budget} tokens, so lengths "
                         f"must be ≥ {length - budget + 1}"
                         + ("" if not instruction else " (or drop the instruction line)"))
    start = 0 if haystack is None else int(rng.integers(len(sentences)))
    pieces, bounds, total, i = [], [0], 0, start
    while total < budget:
        piece = enc(" " + sentences[i % len(sentences)])
        pieces.append(piece)
        total += len(piece)
        bounds.append(total)
        i += 1
    hay = np.concatenate(pieces)[:budget]
    bounds = np.asarray([b for b in bounds if b <= budget])
    cut = int(bounds[np.argmin(np.abs(bounds - depth * budget))])
    tokens = np.concatenate([head, hay[:cut], needle, hay[cut:], query]).astype(np.int32)
    return NiahExample(tokens, len(head) + cut, len(head), budget + len(needle), key, value)


def scaffold_tokens(tokenizer: Tokenizer, task: str = "passkey", add_bos: bool = True,
                    instruction: bool = True) -> int:
    """The most tokens the fixed parts of a prompt (instruction, needle sentence, query; the
    longest key and value) can take: a prompt needs at least this + 1 tokens."""
    kind = "uuid" if task == "uuid" else "number"
    value = {"passkey": "99999", "number": "9999999",
             "uuid": "ffffffff-ffff-4fff-bfff-ffffffffffff"}.get(task)
    if value is None:
        raise ValueError(f"unknown NIAH task {task!r}; expected one of {TASKS}")
    n = lambda s: len(tokenizer.encode(s))
    longest = max((f"{a}-{b}" for a in _ADJECTIVES for b in _NOUNS), key=lambda k: n(k))
    head = (n(f"Some special magic {kind}s are hidden within the following text. Make sure to "
              f"memorize it. I will quiz you about the {kind}s afterwards.\n")
            if instruction else 0)
    return (int(add_bos) + head + n(f" One of the special magic {kind}s for {longest} is: "
                                    f"{value}.")
            + n(f"\nWhat is the special magic {kind} for {longest} mentioned in the provided "
                f"text? The special magic {kind} for {longest} is"))


def default_lengths(tokenizer: Tokenizer, task: str = "passkey", count: int = 3
                    ) -> tuple[list[int], bool]:
    """(lengths, instruction) that fit any tokenizer: `count` powers of two starting at the
    first that leaves ≥ 32 haystack tokens after the scaffolding without RULER's instruction
    line; the instruction is used when even the shortest length leaves it ≥ 32 tokens."""
    need = scaffold_tokens(tokenizer, task, instruction=False) + 32
    first = 64
    while first < need:
        first *= 2
    lengths = [first * 2 ** i for i in range(count)]
    return lengths, scaffold_tokens(tokenizer, task, instruction=True) + 32 <= first


def _first_word(text: str) -> str:
    m = re.match(r"[\w-]+", text.strip())
    return "" if m is None else m.group(0)


def niah_accuracy(model: nnx.Module, tokenizer: Tokenizer,
                  examples: Sequence[NiahExample]) -> float:
    """Fraction of examples (all the same length) whose greedy answer equals the needle value."""
    if not examples:
        raise ValueError("no examples")
    tokens = np.stack([e.tokens for e in examples])
    max_new = max(len(tokenizer.encode(" " + e.value)) for e in examples) + 2
    out = np.asarray(greedy_decode(model, tokens, max_new=max_new))
    hits = [_first_word(tokenizer.decode(row)) == e.value for row, e in zip(out, examples)]
    return float(np.mean(hits))


def niah_grid(model: nnx.Module, tokenizer: Tokenizer, lengths: Sequence[int],
              depths: Sequence[float], task: str = "passkey", n_samples: int = 8, seed: int = 0,
              haystack: str | None = None, add_bos: bool = True, instruction: bool = True,
              progress: bool = False) -> np.ndarray:
    """Accuracy float[len(lengths), len(depths)]; cell (i, j) scores `n_samples` prompts of
    lengths[i] tokens with the needle at depths[j], drawn from seed (seed, i, j)."""
    acc = np.zeros((len(lengths), len(depths)))
    cells = [(i, j) for i in range(len(lengths)) for j in range(len(depths))]
    for i, j in progress_bar(cells, progress, desc=f"niah/{task}", unit="cell"):
        rng = np.random.default_rng([seed, i, j])
        examples = [make_niah_example(tokenizer, lengths[i], depths[j], task, rng, haystack,
                                      add_bos, instruction) for _ in range(n_samples)]
        acc[i, j] = niah_accuracy(model, tokenizer, examples)
    return acc
