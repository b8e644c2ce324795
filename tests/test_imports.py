"""The package's modules import each other without a cycle.

Every module under ``collector/`` is parsed with :mod:`ast`; every import statement counts,
also one inside a function (a lazy import that only defers loading boto3 is fine, but it
still must not close a loop). Package ``__init__`` modules are modules of their own:
``from collector.exchanges.base import X`` depends on ``collector.exchanges.base``, and
``from collector.bench import binance`` on the submodule ``collector.bench.binance``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Set
from pathlib import Path

import collector

PACKAGE_DIR = Path(collector.__file__).parent


def _modules(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every module of the package."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _owner(name: str, modules: Set[str]) -> str | None:
    """The module ``name`` lives in: itself, else its nearest enclosing module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (anywhere in its body)."""
    modules = _modules(package_dir)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        targets: list[str] = []
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.append(submodule if submodule in modules else source)
        owners = {_owner(target, modules.keys()) for target in targets}
        graph[name] = {owner for owner in owners if owner is not None and owner != name}
    return graph


def find_cycle(graph: Mapping[str, Set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None if there is none."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_imports_everywhere() -> None:
    """The graph is read right: top-level, relative-free, lazy and package imports."""
    graph = import_graph()
    assert "collector.planning" in graph["collector.service"]  # top level
    assert "collector.upload.uploader" in graph["collector.service"]  # inside a function
    assert "collector.bench.binance" in graph["collector.bench.scenarios"]  # from pkg import mod
    assert "collector.storage" in graph["collector.service"]  # a package __init__


def test_config_imports_nothing_of_the_package() -> None:
    """Settings are schema, overrides and masking: the bottom floor."""
    assert import_graph()["collector.config"] == set()


def test_find_cycle_reports_the_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_imports_resolve(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "top.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("def f():\n    from ..top import x\n")
    assert import_graph(package) == {
        "pkg": set(),
        "pkg.top": set(),
        "pkg.sub": {"pkg.sub.leaf"},
        "pkg.sub.leaf": {"pkg.top"},
    }
