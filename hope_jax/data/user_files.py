"""Reading the user's own text: .txt (one document per file), .jsonl (one per line), .parquet (a
column)."""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator

SUFFIXES = (".txt", ".jsonl", ".parquet")
PARQUET_BATCH_ROWS = 1024   # rows of a parquet file in memory at once


def expand_paths(paths_or_globs: str | Iterable[str]) -> list[str]:
    """Paths and glob patterns → existing file paths (sorted within each pattern, in given
    order)."""
    if isinstance(paths_or_globs, (str, os.PathLike)):
        paths_or_globs = [paths_or_globs]
    out: list[str] = []
    for pattern in paths_or_globs:
        pattern = os.path.expanduser(os.fspath(pattern))
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern {pattern!r}")
            out.extend(matches)
        elif os.path.isfile(pattern):
            out.append(pattern)
        elif os.path.isdir(pattern):
            raise FileNotFoundError(f"data file {pattern!r} is a directory; give its files, e.g. "
                                    f"{os.path.join(pattern, '*.txt')!r}")
        else:
            raise FileNotFoundError(f"data file {pattern!r} does not exist")
    if not out:
        raise ValueError("no data files given")
    return out


def _read_text(path: str) -> str:
    """The file's text; bytes that are not UTF-8 are an error naming the file and the offset
    (a binary file is never read as replacement characters)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OSError(f"cannot read data file {path!r}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"data file {path!r} is not UTF-8 text: byte 0x{data[e.start]:02x} at "
                         f"offset {e.start} (line {line}); convert it to UTF-8 or remove "
                         f"it") from None


def check_files(paths_or_globs: str | Iterable[str]) -> list[str]:
    """Cheap checks of the user's data files before any work: every path or glob names existing
    files with a supported suffix and some content. Returns the files; raises naming the first
    bad one (the contents are checked when the corpus is read)."""
    paths = expand_paths(paths_or_globs)
    for path in paths:
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in SUFFIXES:
            raise ValueError(_suffix_message(path, suffix))
        if os.path.getsize(path) == 0:
            raise ValueError(f"data file {path!r} is empty (0 bytes)")
        if not os.access(path, os.R_OK):
            raise PermissionError(f"data file {path!r} is not readable")
    return paths


def _suffix_message(path: str, suffix: str) -> str:
    hint = (" (token shards are not read directly: give the text it came from)"
            if suffix in (".bin", ".npy", ".arrow", ".idx") else "")
    return f"data file {path!r}: unsupported suffix {suffix!r}, expected one of {SUFFIXES}{hint}"


def _txt(path: str) -> Iterator[tuple[str, str]]:
    yield path, _read_text(path)


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read one line at a time (only \\n ends a line: not
    splitlines(), which also breaks at \\x1c, \\u2028 … and shifts the line numbers); bytes
    that are not UTF-8 are an error naming the file, the offset and the line, as in
    `_read_text`."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise OSError(f"cannot read data file {path!r}: {e.strerror or e}") from e
    with f:
        offset = 0
        for n, raw in enumerate(f, start=1):
            skip = 3 if n == 1 and raw.startswith(b"\xef\xbb\xbf") else 0   # a BOM
            try:
                line = raw[skip:].decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as e:
                at = skip + e.start
                raise ValueError(f"data file {path!r} is not UTF-8 text: byte 0x{raw[at]:02x} at "
                                 f"offset {offset + at} (line {n}); convert it to UTF-8 or remove "
                                 f"it") from None
            yield n, line
            offset += len(raw)


def _jsonl(path: str, text_field: str) -> Iterator[tuple[str, str]]:
    for n, line in _lines(path):   # streamed: a large .jsonl is never held whole
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
        if not isinstance(record, dict) or text_field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}:{n}: no field {text_field!r} (has {keys}); "
                             f"set data.text_field")
        if not isinstance(record[text_field], str):
            raise ValueError(f"{path}:{n}: field {text_field!r} is not a string")
        yield f"{path}:{n}", record[text_field]


def _parquet(path: str, text_field: str) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path!r} needs pyarrow: pip install pyarrow "
                          "(or `pip install hope-jax[parquet]`)") from e
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise OSError(f"cannot read parquet file {path!r}: {e}") from e
    names = f.schema_arrow.names
    if text_field not in names:
        raise ValueError(f"{path}: no column {text_field!r} (has {names}); set data.text_field")
    # streamed: one batch of rows of the one column at a time, never the whole table
    n = 0
    for batch in f.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text:
                yield f"{path}:{n}", str(text)
            n += 1


def read_user_documents(paths_or_globs: str | Iterable[str], text_field: str = "text"
                        ) -> Iterator[tuple[str, str]]:
    """(name, text) of every document in the files; a file with no text is an error naming it."""
    for path in expand_paths(paths_or_globs):
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".txt":
            docs = _txt(path)
        elif suffix == ".jsonl":
            docs = _jsonl(path, text_field)
        elif suffix == ".parquet":
            docs = _parquet(path, text_field)
        else:
            raise ValueError(_suffix_message(path, suffix))
        count = 0
        for name, text in docs:
            if text.strip():
                count += 1
                yield name, text
        if count == 0:
            raise ValueError(f"data file {path!r} is empty (no text found)")


def read_user_files(paths_or_globs: str | Iterable[str], text_field: str = "text") -> Iterator[str]:
    """The text of every document: one per .txt file, one per .jsonl line, one per parquet row."""
    for _, text in read_user_documents(paths_or_globs, text_field):
        yield text
