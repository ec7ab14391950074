"""The architecture holds: packages by role whose imports point one way (.importlinter), no import cycles, no
private names used across modules, small modules and functions, and each package saying what it owns."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rag", "indexer")
ROLES = ("core", "text", "index", "models", "retrieval", "checking", "answering", "datasets", "training",
         "evaluation", "cli")  # fmt: skip
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def product_modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports (at any depth of its code), each as the longest known module name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_contracts_in_importlinter_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    command = str(lint_imports) if lint_imports.exists() else shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports not found: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_imports_itself_through_others() -> None:
    modules = dict(product_modules())
    graph = {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of the code: drop package -> child edges.
    graph = {name: {d for d in deps if not d.startswith(name + ".")} for name, deps in graph.items()}
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = []
    for name, path in product_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                offenders += [f"{name}: {node.module}.{a.name}" for a in node.names if is_private(a.name)]
    assert offenders == []


def test_modules_stay_small() -> None:
    large = {
        name: n for name, path in product_modules() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert large == {}


def test_functions_stay_short() -> None:
    files = [path for _, path in product_modules()] + sorted((ROOT / "tests").rglob("*.py"))
    long_functions = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long_functions == []


@pytest.mark.parametrize("role", ROLES)
def test_each_package_says_what_it_owns_and_may_import(role: str) -> None:
    module = importlib.import_module(f"rag.{role}")
    doc = module.__doc__ or ""
    assert len(doc.split()) >= 15, f"rag.{role} needs a docstring saying what it owns"
    assert "May import" in doc, f"rag.{role}'s docstring must say what it may import"


def test_the_importlinter_layers_name_every_role() -> None:
    contracts = (ROOT / ".importlinter").read_text(encoding="utf-8")
    assert all(f"rag.{role}" in contracts for role in ROLES)


def test_the_public_names_resolve_from_rag() -> None:
    import indexer
    import rag
    from rag.answering.engine import Engine
    from rag.core.config import Settings
    from rag.retrieval.search import Searcher

    assert (rag.Engine, rag.Searcher, rag.Settings, rag.build_index) == (
        Engine,
        Searcher,
        Settings,
        indexer.build_index,
    )
    for name in rag.__all__:
        assert getattr(rag, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Engin'"):
        _ = rag.Engin
