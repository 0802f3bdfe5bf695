"""read_user_files formats and errors, check_token_ids (hope_jax/data/user_files.py,
validation.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hope_jax.data import check_token_ids, read_user_files

from .conftest import FIXTURES


def test_reads_txt_and_jsonl(fixture_files):
    """A .txt file is one document, a .jsonl line is one document; globs expand in sorted order."""
    docs = list(read_user_files(fixture_files))
    with open(fixture_files[1], encoding="utf-8") as f:
        lines = [json.loads(line)["text"] for line in f if line.strip()]
    assert len(docs) == 1 + len(lines)
    assert docs[0].startswith("The Garden in Winter") and docs[1:] == lines
    assert list(read_user_files(os.path.join(FIXTURES, "*.jsonl"))) == lines


def test_empty_and_unreadable_files_are_named(tmp_path):
    """Errors name the empty file, the missing file and the path that is not a readable file."""
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty.txt.*empty"):
        list(read_user_files([str(empty)]))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        list(read_user_files([str(tmp_path / "missing.txt")]))
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="folder.txt"):
        list(read_user_files([str(folder)]))
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        list(read_user_files([str(tmp_path / "nothing-here*.txt")]))
    odd = tmp_path / "table.csv"
    odd.write_text("a,b\n")
    with pytest.raises(ValueError, match="table.csv.*'.csv'"):
        list(read_user_files([str(odd)]))
    if os.geteuid() != 0:                   # root reads files whatever their mode
        locked = tmp_path / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        with pytest.raises(OSError, match="locked.txt"):
            list(read_user_files([str(locked)]))


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    """A missing field names the file, line and field; a bad JSON line names file and line."""
    path = tmp_path / "records.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"records.jsonl:2.*'text'.*\['body'\]"):
        list(read_user_files([str(path)]))
    path.write_text('{"body": "no text field"}\n')
    assert list(read_user_files([str(path)], text_field="body")) == ["no text field"]
    path.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(ValueError, match="records.jsonl:2"):
        list(read_user_files([str(path)]))


def test_parquet(tmp_path):
    """Parquet rows are documents (with pyarrow); without pyarrow the error names file and
    package."""
    path = str(tmp_path / "rows.parquet")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        with open(path, "wb") as f:
            f.write(b"PAR1")
        with pytest.raises(ImportError, match="rows.parquet.*pyarrow"):
            list(read_user_files([path]))
        return
    texts = ["first row", "second row — ü", "third"]
    pq.write_table(pa.table({"content": texts}), path)
    assert list(read_user_files([path], text_field="content")) == texts
    # several row groups and record batches, an empty row, another column: streamed in order
    many = [f"row {i} " + "x" * (i % 7) if i % 11 else "" for i in range(2500)]
    big = str(tmp_path / "many.parquet")
    pq.write_table(pa.table({"id": list(range(2500)), "text": many}), big, row_group_size=700)
    assert list(read_user_files([big])) == [t for t in many if t]
    with pytest.raises(ValueError, match="rows.parquet.*'text'"):
        list(read_user_files([path]))


@pytest.mark.fast
def test_check_token_ids_names_id_and_vocab():
    """In-range ids pass; the message names the first bad id, its position and the vocab size."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 260, size=(4, 33))
    check_token_ids(ids, 260)
    ids[2, 7] = 261
    with pytest.raises(ValueError, match=r"token id 261 at position \(2, 7\).*vocab_size=260"):
        check_token_ids(ids, 260)
    with pytest.raises(ValueError, match="token id -1"):
        check_token_ids(np.array([3, -1]), 260)
