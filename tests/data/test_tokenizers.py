"""ByteTokenizer / SentencePieceTokenizer round trips, token_bytes, save/load
(hope_jax/data/*tokenizer*.py)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from hope_jax.data import (ByteTokenizer, SentencePieceTokenizer, load_tokenizer, read_user_files,
                           train_tokenizer)

from .conftest import FIXTURE_FILES


def _random_text(rng: random.Random, n: int) -> str:
    """Random text drawing from ASCII, Latin-1, CJK and astral-plane code points."""
    ranges = [(32, 126), (0xA0, 0xFF), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(rng.choice([chr(rng.randint(lo, hi)), " ", "\n", "\t"]) if rng.random() < 0.1
                   else chr(rng.randint(lo, hi)))
    return "".join(out)


@pytest.mark.fast
def test_byte_round_trip_and_token_bytes():
    """decode(encode(t)) == t for random non-ASCII text; token_bytes sums to the UTF-8 length."""
    tok = ByteTokenizer()
    ids = (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)
    assert ids == (260, 256, 257, 258, 259)
    rng = random.Random(0)
    for _ in range(20):
        text = _random_text(rng, rng.randint(0, 200))
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.max(initial=0) < 256
        assert tok.decode(ids) == text
        assert tok.token_bytes()[ids].sum() == len(text.encode("utf-8"))
    assert list(tok.encode("é")) == [0xC3, 0xA9]
    assert tok.token_bytes().shape == (260,) and tok.token_bytes()[256:].sum() == 0


def test_byte_decode_skips_specials_and_replaces_invalid_utf8(tmp_path):
    """Specials vanish on decode; a lone continuation byte decodes to U+FFFD; save/load gives it
    back."""
    tok = ByteTokenizer()
    ids = [tok.bos_id, *tok.encode("ok"), tok.eos_id, tok.pad_id, 0xA9, tok.unk_id]
    assert tok.decode(ids) == "ok\ufffd"
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path) == tok


@pytest.fixture(scope="module")
def bpe() -> SentencePieceTokenizer:
    return train_tokenizer("bpe", read_user_files(FIXTURE_FILES), 400)


def test_sentencepiece_round_trip(bpe):
    """BPE trained on the fixture round-trips the fixture and unseen random text (byte fallback)."""
    assert bpe.vocab_size == 400
    assert len({bpe.pad_id, bpe.bos_id, bpe.eos_id, bpe.unk_id}) == 4
    rng = random.Random(1)
    texts = list(read_user_files(FIXTURE_FILES)) + [_random_text(rng, 150) for _ in range(10)]
    token_bytes = bpe.token_bytes()
    for text in texts:
        ids = bpe.encode(text)
        assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < bpe.vocab_size
        assert bpe.decode(ids) == text
        assert token_bytes[ids].sum() == len(text.encode("utf-8"))
    fixture = texts[0]
    assert len(bpe.encode(fixture)) < 0.8 * len(fixture.encode("utf-8")), "BPE learned no merges"
    assert bpe.decode([bpe.bos_id, *bpe.encode("garden"), bpe.eos_id, bpe.pad_id]) == "garden"


def test_sentencepiece_save_load(bpe, tmp_path):
    """save() then load_tokenizer() gives an equal tokenizer with the same ids."""
    bpe.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, SentencePieceTokenizer) and loaded == bpe
    text = "The cat sat in the garden — café 🙂"
    np.testing.assert_array_equal(loaded.encode(text), bpe.encode(text))
    np.testing.assert_array_equal(loaded.token_bytes(), bpe.token_bytes())


def test_tokenizer_errors(tmp_path):
    """Unknown kinds, a too-small BPE vocabulary and a missing tokenizer are named in the error."""
    with pytest.raises(ValueError, match="'wordpiece'"):
        train_tokenizer("wordpiece", ["x"], 300)
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer("bpe", ["some text"], 100)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
