"""The data system: corpora, tokenizers, cached token shards and the grain pipeline
(docs/data.md)."""
from .byte_tokenizer import ByteTokenizer
from .eval_batches import eval_batches
from .pipeline import train_iterator
from .prepare import PreparedData, prepare
from .sentencepiece_tokenizer import SentencePieceTokenizer
from .shards import SplitInfo
from .tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from .user_files import read_user_files
from .validation import check_token_ids

__all__ = ["ByteTokenizer", "PreparedData", "SentencePieceTokenizer", "SplitInfo", "Tokenizer",
           "check_token_ids", "eval_batches", "load_tokenizer", "prepare", "read_user_files",
           "train_iterator", "train_tokenizer"]
