"""Every decision tag and `§` citation in the code and the docs resolves to a heading in docs/.

Code, tests and docs cite the design decisions by tag (a capital D and a number) and the sections
of docs/design.md by `§` number. This test walks the shipped sources (hope_jax/, kernels/, tests/,
experiments/: *.py; docs/*.md, README.md, BUILD.md), collects every such citation, and fails
listing each one that no heading of docs/*.md starts with. It also fails if a shipped file
mentions a file that is not part of the repository (the private spec and notes it was written
from). Pure text: no jax, well under a second.
"""
from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY_DIRS = ("hope_jax", "kernels", "tests", "experiments")
TOP_DOCS = ("README.md", "BUILD.md")

DECISION = re.compile(r"\bD(\d{1,2})\b")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(?:D(\d{1,2})\b|§(\d+(?:\.\d+)*))")
# Names of files that do not ship with the repository, written so that this file does not match
# itself. The private folder's name preceded by `/` or a word character (a cluster path such as
# /scratch/runs) is not a mention.
PRIVATE = re.compile("|".join(("NESTED" + "_LEARNING", "JAX" + "_STACK", r"SOURCES\.md",
                                r"STYLE\.md", r"(?<![\w/])" + "shared" + "/")))


def shipped_files(root: str = ROOT) -> list[str]:
    """Paths (relative to root) of the files whose citations must resolve."""
    files = []
    for top in PY_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames
                                 if not d.startswith(".") and d != "__pycache__")
            files += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(filenames)
                      if f.endswith(".py")]
    docs = os.path.join(root, "docs")
    if os.path.isdir(docs):
        files += [os.path.join("docs", f) for f in sorted(os.listdir(docs)) if f.endswith(".md")]
    files += [f for f in TOP_DOCS if os.path.isfile(os.path.join(root, f))]
    return files


def _lines(root: str, path: str):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        yield from enumerate(f, start=1)


def headings(root: str = ROOT) -> tuple[set[str], set[str]]:
    """(decision numbers, § numbers) that start a heading of some docs/*.md."""
    decisions, sections = set(), set()
    docs = os.path.join(root, "docs")
    for name in sorted(os.listdir(docs)) if os.path.isdir(docs) else ():
        if name.endswith(".md"):
            for _, line in _lines(root, os.path.join("docs", name)):
                m = HEADING.match(line)
                if m and m.group(1):
                    decisions.add(str(int(m.group(1))))
                elif m:
                    sections.add(m.group(2))
    return decisions, sections


def unresolved(root: str = ROOT) -> list[str]:
    """`path:line: tag` for every citation without a heading."""
    decisions, sections = headings(root)
    missing = []
    for path in shipped_files(root):
        for n, line in _lines(root, path):
            for m in DECISION.finditer(line):
                if str(int(m.group(1))) not in decisions:
                    missing.append(f"{path}:{n}: {m.group(0)}")
            for m in SECTION.finditer(line):
                if m.group(1) not in sections:
                    missing.append(f"{path}:{n}: {m.group(0)}")
    return missing


def private_mentions(root: str = ROOT) -> list[str]:
    """`path:line: text` for every mention of a file that does not ship."""
    paths = shipped_files(root) + (["Makefile"] if os.path.isfile(os.path.join(root, "Makefile"))
                                   else [])
    return [f"{path}:{n}: {line.strip()}" for path in paths for n, line in _lines(root, path)
            if PRIVATE.search(line)]


@pytest.mark.fast
def test_every_citation_has_a_heading():
    missing = unresolved()
    assert not missing, ("citations without a heading in docs/*.md (add the heading, e.g. to "
                         "docs/design.md, or fix the citation):\n" + "\n".join(missing))


@pytest.mark.fast
def test_no_mention_of_files_that_do_not_ship():
    found = private_mentions()
    assert not found, ("shipped files cite files that are not in the repository; cite docs/ "
                       "instead:\n" + "\n".join(found))


@pytest.mark.fast
def test_the_checks_can_fail(tmp_path):
    """A scratch tree with one good and two bad citations, and a private file name."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "hope_jax").mkdir()
    (tmp_path / "docs" / "design.md").write_text("# Design\n\n### D7 — gates\n\n## §6.4 Chunks\n")
    bogus_tag, bogus_section, private = "D" + "99", "§" + "9.9", "SOURCES" + ".md"
    (tmp_path / "hope_jax" / "x.py").write_text(
        f'"""See D7 and §6.4, then {bogus_tag} and {bogus_section}."""\n# {private}\n')
    assert unresolved(str(tmp_path)) == [f"hope_jax/x.py:1: {bogus_tag}",
                                         f"hope_jax/x.py:1: {bogus_section}"]
    assert private_mentions(str(tmp_path)) == [f"hope_jax/x.py:2: # {private}"]
