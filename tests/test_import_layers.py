"""Imports point one way: no cycle between the modules of ``rag_flamingo/``, ``index_builder`` above
``rag_flamingo`` (the library never imports the command), and no script reaching into ``tests/``.

Every import statement counts, at module level or inside a function: an import deferred into a
function still makes the two modules depend on each other, and deferring is how cycles hide. The
implicit import of a parent package (``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first)
is not an edge. ``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is one,
else to ``pkg`` itself (its ``__init__`` defines or re-exports ``name``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "rag_flamingo"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, packages named by their ``__init__.py``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The in-package modules ``module`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_package, node.level, node.module) if node.level else node.module
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules and n != module)
    return found


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return cycles


def test_rag_flamingo_has_no_import_cycle():
    modules = module_files()
    assert f"{PACKAGE}.model.modeling" in modules and len(modules) > 20
    assert import_cycles(modules) == []


def test_model_layers_point_one_way():
    modules = module_files()
    modeling = imports_of(f"{PACKAGE}.model.modeling", modules[f"{PACKAGE}.model.modeling"], modules)
    assert not modeling & {f"{PACKAGE}.model.generation", f"{PACKAGE}.model.loading"}


def test_the_checker_sees_function_level_cycles(tmp_path):
    """A cycle made only by an import inside a function is reported (the checker can fail)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from pkg.a import f\n")
    assert import_cycles(module_files(pkg, "pkg")) == [["pkg.a", "pkg.b"]]


def imported_roots(path: Path) -> set[str]:
    """The top-level names every import statement of a file reaches (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_library_never_imports_the_build_command():
    """index_builder (the build_index command, manifest makers) imports rag_flamingo; never the reverse."""
    offenders = sorted(m for m, p in module_files().items() if "index_builder" in imported_roots(p))
    assert offenders == []
    builder = Path(__file__).resolve().parents[1] / "index_builder"
    assert any("rag_flamingo" in imported_roots(p) for p in builder.rglob("*.py"))  # the edge that is allowed


def test_no_script_reaches_into_tests():
    """Scripts import the package (and each other), never the test suite's helpers."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    offenders = []
    for path in sorted(scripts.glob("*.py")):
        on_path = [line for line in path.read_text().splitlines() if "sys.path" in line and "tests" in line]
        if {"tests", "support", "conftest"} & imported_roots(path) or on_path:
            offenders.append(path.name)
    assert offenders == []
