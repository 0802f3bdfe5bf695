"""Imports go downward only (docs/design.md, "Package layering").

Every module of hope_jax (and of `kernels/`, installed as hope_jax.kernels) is parsed with `ast`;
every import counts, at module level or inside a function. A module may import from its own
package and from the packages to its left in the order that docs/design.md gives (read from
there, so the document and this test cannot disagree), and no two modules may import each other,
directly or through others.
"""
from __future__ import annotations

import ast
import pathlib
from collections import deque

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = {"hope_jax": ROOT / "hope_jax", "hope_jax.kernels": ROOT / "kernels"}
HEADING = "## Package layering"


def layer_order() -> list[str]:
    """The layers, lowest first: the first line with arrows under the heading in docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    _, found, section = text.partition(f"\n{HEADING}\n")
    assert found, f"docs/design.md has no '{HEADING}' section"
    line = next((ln for ln in section.splitlines() if "→" in ln), None)
    assert line, f"docs/design.md, '{HEADING}': no 'a → b → …' line"
    return [name.strip(" `") for name in line.split("→")]


def all_modules() -> dict[str, pathlib.Path]:
    """{dotted module name: file} of hope_jax and hope_jax.kernels."""
    out = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((prefix, *parts))] = path
    return out


def layer_of(module: str) -> str | None:
    """The top-level entry a module belongs to ("core", "cli_base", "kernels", …); None for the
    root package hope_jax itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(module: str, path: pathlib.Path, known: dict) -> list[tuple[str, int]]:
    """(imported hope_jax module, line) for every import statement in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                name = f"{source}.{alias.name}"
                targets.append((name if name in known else source, node.lineno))
    out = []
    for name, line in targets:
        while name and name not in known:  # `import a.b.c` of a package: its nearest module
            name = name.rpartition(".")[0]
        if name and name != module:
            out.append((name, line))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    known = all_modules()
    return {m: imports(m, p, known) for m, p in known.items()}


@pytest.mark.fast
def test_every_package_has_a_layer():
    order = layer_order()
    assert len(order) == len(set(order)), f"a layer is named twice: {order}"
    entries = {layer_of(m) for m in all_modules()} - {None}
    missing = sorted(entries - set(order))
    assert not missing, (f"{missing} have no place in the layer order of docs/design.md "
                         f"('{HEADING}'): add them where their imports allow")


@pytest.mark.fast
def test_imports_go_downward(graph):
    order = layer_order()
    rank = {name: i for i, name in enumerate(order)}
    files = all_modules()
    upward = []
    for module, targets in graph.items():
        here = layer_of(module)
        for target, line in targets:
            there = layer_of(target)
            if here is None or there is None or here == there:
                continue
            if rank.get(there, -1) > rank.get(here, len(order)):
                where = files[module].relative_to(ROOT)
                upward.append(f"{where}:{line}: {module} imports {target} ({here} may only "
                              f"import from {order[:rank[here]]})")
    assert not upward, "upward imports:\n  " + "\n  ".join(upward)


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one module."""
    edges = {m: sorted({t for t, _ in ts}) for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        start = min(component)
        parent = {start: None}
        queue = deque([start])
        while queue:  # breadth first inside the component, back to `start`
            v = queue.popleft()
            if start in edges[v]:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                cycles.append(path[::-1] + [start])
                break
            for w in edges[v]:
                if w in component and w not in parent:
                    parent[w] = v
                    queue.append(w)
    return cycles


@pytest.mark.fast
def test_no_import_cycles(graph):
    cycles = [" → ".join(c) for c in _cycles(graph)]
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)
