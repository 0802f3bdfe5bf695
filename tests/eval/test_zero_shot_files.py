"""Zero-shot files as released: PIQA's separate labels file, HellaSwag's extra keys and string
labels; every problem in a file is reported as path:line before anything is scored."""
import json
import os

import numpy as np
import pytest

from hope_jax.eval.zero_shot import ZeroShotFileError, evaluate_jsonl, load_examples, load_jsonl
from eval_oracles import KGramOracle

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval")


def _official_piqa(tmp_path):
    """The fixture split as the PIQA release ships it: rows without labels + NAME-labels.lst."""
    rows = load_jsonl(os.path.join(FIXTURES, "piqa.jsonl"))
    (tmp_path / "valid.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in rows))
    (tmp_path / "valid-labels.lst").write_text("".join(f"{r['label']}\n" for r in rows))
    return rows, str(tmp_path / "valid.jsonl")


def test_official_piqa_labels_file_is_found_and_scored(tok, tmp_path):
    rows, path = _official_piqa(tmp_path)
    fmt, examples = load_examples(path)
    assert fmt == "piqa" and [e["label"] for e in examples] == [r["label"] for r in rows]
    seqs = [np.concatenate([[tok.bos_id], tok.encode(
        r["goal"] + " " + (r["sol1"] if r["label"] == 0 else r["sol2"]))]) for r in rows]
    out = evaluate_jsonl(KGramOracle(seqs, tok.vocab_size), tok, path, batch_size=4)
    assert out["format"] == "piqa" and out["acc"] == 1.0 and out["n"] == len(rows)


def test_official_hellaswag_rows(tmp_path):
    """Extra keys are ignored and a label written as a string is read as an integer."""
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_text(json.dumps(dict(ind=4, activity_label="Baking", ctx_a="A cook", ctx_b="stirs",
                                    ctx="A cook stirs", endings=["a", "b", "c", "d"],
                                    source_id="x", split="val", split_type="indomain",
                                    label="2")) + "\n")
    fmt, examples = load_examples(str(path))
    assert fmt == "hellaswag" and examples[0]["label"] == 2


@pytest.mark.parametrize("lines, message", [
    (['{"text": "a b"}', '{"text": "c d"', '{"text": "e f"}'], r"f\.jsonl:2: not valid JSON"),
    (['{"text": "a b"}', '', '[1, 2]'], r"f\.jsonl:3: expected a JSON object"),
    (['{"text": "a b"}', '{"text": "single"}'], r"f\.jsonl:2: LAMBADA text needs a context"),
    (['{"ctx": "a", "endings": ["b", "c"], "label": 2}'], r"f\.jsonl:1: label 2 is out of range"),
    (['{"ctx": "a", "endings": ["b", "c"], "label": -1}'], r"label -1 is out of range"),
    (['{"ctx": "a", "endings": ["b", "c"], "label": 0.5}'], r"label must be an integer"),
    (['{"ctx": "a", "endings": ["b"], "label": 0}'], r"'endings' must be a list of ≥ 2"),
    (['{"ctx": "a", "endings": ["b", "c"]}'], r"f\.jsonl:1: no 'label'"),
    (['{"goal": "g", "sol1": "a", "sol2": "b"}'], r"PIQA keeps them in a separate file"),
    (['{"goal": "g", "sol1": "a", "sol2": 3, "label": 0}'], r"needs a string 'sol2'"),
    (['{"question": "?"}'], r"f\.jsonl:1: unknown zero-shot format"),
    ([''], r"holds no examples"),
])
def test_bad_rows_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ZeroShotFileError, match=message):
        load_examples(str(path))


def test_line_numbers_count_newlines_only(tmp_path):
    """A U+2028 inside a string does not shift the reported line (str.splitlines would)."""
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "a\u2028b c"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(ZeroShotFileError, match=r"f\.jsonl:2:"):
        load_examples(str(path))
