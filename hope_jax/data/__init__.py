"""The data system: corpora, tokenizers, cached token shards, prepared ArrayRecord shards and the
grain pipeline (docs/data.md)."""
from .byte_tokenizer import ByteTokenizer
from .eval_batches import eval_batches
from .prepare import PreparedData, prepare
from .sentencepiece_tokenizer import SentencePieceTokenizer
from .shards import SplitInfo
from .tokenizers import Tokenizer, load_tokenizer, save_tokenizer_once, train_tokenizer
from .user_files import read_user_files
from .validation import check_token_ids

__all__ = ["ByteTokenizer", "PreparedData", "PreparedShards", "SentencePieceTokenizer",
           "SplitInfo", "Tokenizer", "check_token_ids", "eval_batches", "load_tokenizer",
           "save_tokenizer_once",
           "open_prepared", "prepare", "prepare_shards", "read_user_files", "train_iterator",
           "train_tokenizer"]

# Imported on first use (PEP 562): grain (pipeline, shard_reader) is slow to import, and the
# worker processes of prepare_shards need only the tokenizers.
_LAZY = {"train_iterator": "pipeline", "PreparedShards": "shard_reader",
         "open_prepared": "shard_reader", "prepare_shards": "shard_writer"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
