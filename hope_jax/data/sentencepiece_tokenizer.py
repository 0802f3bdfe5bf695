"""SentencePiece BPE tokenizer with byte fallback, trained offline on the corpus.

Trained with identity normalisation, no dummy prefix and no whitespace squeezing, so that
decode(encode(text)) == text for any text (unseen characters fall back to byte pieces).
"""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import sentencepiece as spm

from .byte_tokenizer import TOKENIZER_JSON

MODEL_FILE = "tokenizer.model"
_MAX_LINE_BYTES = 16384


def _lines(texts: Iterable[str]) -> Iterator[str]:
    """Training sentences: the non-empty lines of every text, cut to the trainer's line limit."""
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line[: _MAX_LINE_BYTES // 4]


def _character_coverage(lines: list[str], max_chars: int) -> float:
    """The coverage (in sentencepiece's allowed [0.98, 0.9995]) that keeps at most `max_chars` whole
    characters in the vocabulary; rarer characters are left to byte fallback, which leaves room for
    merges in a small vocab."""
    counts = Counter()
    for line in lines:
        counts.update(line)
    freq = np.sort(np.fromiter(counts.values(), dtype=np.float64))[::-1]
    cumulative = np.cumsum(freq) / freq.sum()
    if max_chars >= len(freq):
        return 0.9995
    return float(min(0.9995, max(cumulative[max(max_chars, 1) - 1] - 1e-6, 0.98)))


class SentencePieceTokenizer:
    """A trained SentencePiece BPE model; ids: unk 0, bos 1, eos 2, pad 3, then 256 byte pieces."""

    kind = "bpe"

    def __init__(self, model_proto: bytes):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.vocab_size: int = int(self._sp.get_piece_size())
        self.unk_id: int = int(self._sp.unk_id())
        self.eos_id: int = int(self._sp.eos_id())
        if self.eos_id < 0:
            raise ValueError("the sentencepiece model has no eos piece (eos_id=-1): documents "
                             "are separated by eos, so the model needs one")
        # a model made elsewhere may lack pad / bos (id -1): pad with unk (always masked),
        # start with eos
        self.pad_id: int = int(self._sp.pad_id()) if self._sp.pad_id() >= 0 else self.unk_id
        self.bos_id: int = int(self._sp.bos_id()) if self._sp.bos_id() >= 0 else self.eos_id
        self._newline_id: int = int(self._sp.piece_to_id("<0x0A>"))
        self._by_line = self._line_encoding_exact()
        self._specials = np.array([self.pad_id, self.bos_id, self.eos_id], dtype=np.int64)
        self.encode_threads: int | None = None   # sentencepiece threads (None: every CPU)

    def _line_encoding_exact(self) -> bool:
        """Whether encoding line by line, joined by the newline byte piece, gives the ids of
        encoding the whole text (true of the models `train` makes; a model made elsewhere, e.g.
        with a dummy prefix, is encoded whole)."""
        if not self._sp.is_byte(self._newline_id):
            return False
        probe = "ab c\n d\n\nef 12\n"
        lines = [self._sp.encode(line) for line in probe.split("\n")]
        joined = [i for j, ids in enumerate(lines) for i in ([self._newline_id] if j else []) + ids]
        return joined == self._sp.encode(probe)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, num_threads: int | None = None
              ) -> SentencePieceTokenizer:
        """Trains BPE (byte_fallback) on the lines of `texts`; vocab_size counts the 4 specials."""
        if vocab_size < 260:
            raise ValueError(f"bpe vocab_size={vocab_size} is too small: it needs at least 260 "
                             "(4 specials + 256 byte-fallback pieces)")
        lines = list(_lines(texts))
        if not lines:
            raise ValueError("cannot train a BPE tokenizer on no text")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
                model_type="bpe", byte_fallback=True,
                character_coverage=_character_coverage(lines, (vocab_size - 260) // 2),
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
                hard_vocab_limit=False, max_sentence_length=_MAX_LINE_BYTES,
                input_sentence_size=2_000_000, shuffle_input_sentence=True,
                unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
                num_threads=num_threads or max(1, os.cpu_count() or 1))
        except RuntimeError as e:
            if "required_chars" not in str(e):
                raise
            raise ValueError(f"bpe vocab_size={vocab_size} is too small for the characters of this "
                             f"corpus: {e}") from e
        return cls(model.getvalue())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SentencePieceTokenizer:
        """Reads `tokenizer.model` from `directory`."""
        return cls.from_file(os.path.join(os.fspath(directory), MODEL_FILE))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
        """An existing sentencepiece model file (a local path or an etils.epath location such as
        gs://…); an unreadable or invalid file is an error naming it."""
        from etils import epath
        try:
            proto = epath.Path(path).read_bytes()
        except OSError as e:
            raise FileNotFoundError(f"cannot read the sentencepiece model {os.fspath(path)!r}: "
                                    f"{e.strerror or e}") from e
        try:
            return cls(proto)
        except RuntimeError as e:
            raise ValueError(f"{os.fspath(path)!r} is not a sentencepiece model "
                             f"({str(e).strip()[:200]})") from None
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)!r}: {e}") from None

    def proto_sha256(self) -> str:
        """sha256 hex of the serialised model (the tokenizer's identity)."""
        import hashlib
        return hashlib.sha256(self._proto).hexdigest()

    def encode(self, text: str) -> np.ndarray:
        """text → int32 [n] ids (no bos/eos added)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encodes several texts at once. No piece holds a newline (training saw single lines), so
        encoding line by line and joining with the newline byte piece gives the same ids, faster."""
        threads = self.encode_threads or max(1, os.cpu_count() or 1)
        if not self._by_line:
            return [np.asarray(ids, dtype=np.int32)
                    for ids in self._sp.encode(list(texts), num_threads=threads)]
        lines = [text.split("\n") for text in texts]
        flat = self._sp.encode([line for doc in lines for line in doc], num_threads=threads)
        out, i = [], 0
        for doc in lines:
            ids: list[int] = []
            for j in range(len(doc)):
                if j:
                    ids.append(self._newline_id)
                ids.extend(flat[i + j])
            i += len(doc)
            out.append(np.asarray(ids, dtype=np.int32))
        return out

    def decode(self, ids: Any) -> str:
        """int ids [n] → text; pad/bos/eos are skipped, invalid UTF-8 becomes U+FFFD."""
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        a = a[(a >= 0) & (a < self.vocab_size) & ~np.isin(a, self._specials)]
        return self._sp.decode(a.tolist())

    def token_bytes(self) -> np.ndarray:
        """int32 [vocab_size]: UTF-8 bytes each id stands for (byte pieces 1, specials 0)."""
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for i in range(self.vocab_size):
            if self._sp.is_byte(i):
                out[i] = 1
            elif not (self._sp.is_control(i) or self._sp.is_unknown(i)):
                out[i] = len(self._sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        return out

    def save(self, directory: str | os.PathLike) -> None:
        """Writes `tokenizer.json` and `tokenizer.model` into `directory` (created if missing)."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, MODEL_FILE), "wb") as f:
            f.write(self._proto)
        with open(os.path.join(directory, TOKENIZER_JSON), "w") as f:
            json.dump({"kind": self.kind, "vocab_size": self.vocab_size, "model": MODEL_FILE,
                       "pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}, f)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SentencePieceTokenizer) and other._proto == self._proto

    def __hash__(self) -> int:
        return hash(self._proto)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"
