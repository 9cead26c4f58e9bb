"""The guard of the package layout (issue 9): no import circle between tlsbridge modules, counting
imports inside functions and under TYPE_CHECKING (a type-level circle is still a circle to a
reader); no module over 450 lines; at most 20 modules directly in tlsbridge/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tlsbridge"
MAX_LINES = 450
MAX_ROOT_MODULES = 20


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every tlsbridge module `name` imports, anywhere in the file (functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from tlsbridge.sidecar import timetable` imports a module, not a name
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)  # a package's __init__ imported on the way down is not a cycle
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    known = {"tlsbridge.a", "tlsbridge.b", "tlsbridge.sub", "tlsbridge.sub.c"}
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tlsbridge.b import X\n")
    b = tmp_path / "b.py"
    b.write_text("def f():\n    from tlsbridge.sub import c\n")
    c = tmp_path / "c.py"
    c.write_text("from ..a import Y\n")
    graph = {"tlsbridge.a": imports_of("tlsbridge.a", a, known),
             "tlsbridge.b": imports_of("tlsbridge.b", b, known),
             "tlsbridge.sub.c": imports_of("tlsbridge.sub.c", c, known)}
    assert graph == {"tlsbridge.a": {"tlsbridge.b"}, "tlsbridge.b": {"tlsbridge.sub.c"},
                     "tlsbridge.sub.c": {"tlsbridge.a"}}
    assert cycles(graph) == [["tlsbridge.a", "tlsbridge.b", "tlsbridge.sub.c"]]


def test_no_module_over_the_line_limit() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_few_modules_directly_in_the_package() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_test_modules_have_unique_names() -> None:
    """tests/ has no __init__.py: two test modules of one basename stop pytest's collection."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, Path] = {}
    for path in sorted(tests.rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a name"
        seen[path.name] = path
