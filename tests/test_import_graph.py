"""No import cycles in pybuildless/, and lower packages never import the build or the command line.

The graph is built statically with ``ast`` from every import statement, wherever it stands: at module
level, inside functions and under ``if TYPE_CHECKING:``. A cycle hidden in a function body or behind
TYPE_CHECKING still ties the two modules together (neither can be read, tested or moved without the
other), so it counts. An edge goes to the module imported (``from p import m`` with ``m`` a submodule
goes to ``p.m``; with ``m`` a name, to ``p``), and to every package ``__init__`` above it that the
import runs, except the importer's own packages (Python has them already when it imports a sibling).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pybuildless"
# Layers flow one way: cli -> build -> the rest. What may import build, and what may import cli.
MAY_IMPORT = {"build": {"build", "cli"}, "cli": {"cli", "__main__"}}
LEAVES = {"name": {"errors"}}  # package -> the only other components it may import


def module_files(src: Path, package: str) -> dict[str, Path]:
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(src: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (see the module docstring for the rules)."""
    modules = module_files(src, package)

    def existing(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own = set(_ancestors(module)) | {module}
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
                runs = named
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                named = submodules + ([base] if len(submodules) < len(node.names) else [])
                runs = named + [base]
            else:
                continue
            for name in named:
                if name.split(".")[0] == package and existing(name):
                    targets.add(existing(name))
            for name in runs:
                if name.split(".")[0] == package and existing(name):
                    targets.update(a for a in _ancestors(existing(name)) + [existing(name)] if a not in own)
        targets.discard(module)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each as one cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(_cycle_path(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle through the component's smallest node, for the message (breadth-first, so short)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError("a strongly connected component without a cycle")


def component_of(module: str) -> str:
    """``pybuildless.fs.users`` -> ``fs``; top-level modules (``errors``, ``log``, ``__main__``) are their own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = out.setdefault(component_of(module), set())
        edges.update(component_of(t) for t in targets)
    for component, edges in out.items():
        edges.discard(component)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def _show(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(path) for path in found)


def test_no_module_import_cycles(graph) -> None:
    found = cycles(graph)
    assert not found, "import cycles:\n" + _show(found)


def test_no_package_import_cycles(graph) -> None:
    found = cycles(package_graph(graph))
    assert not found, "packages importing each other:\n" + _show(found)


def test_lower_packages_never_import_build_or_cli(graph) -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if component_of(t) in MAY_IMPORT and component_of(m) not in MAY_IMPORT[component_of(t)])
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_leaf_packages_import_nothing_else(graph) -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if component_of(m) in LEAVES and component_of(t) not in LEAVES[component_of(m)] | {component_of(m)})
    assert not wrong, "a leaf package imports:\n" + "\n".join(wrong)


# -- the checker itself finds what it is meant to find --------------------------------------------------


PLANTED = {
    "__init__.py": "",
    # a cycle through an import under TYPE_CHECKING and one inside a function
    "a/__init__.py": "",
    "a/one.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b.two import X\n",
    "b/__init__.py": "",
    "b/two.py": "def f():\n    import pkg.a.one\n",
    "c.py": "from pkg.a import one\n",
    # the handlers' pattern: __init__ defines a value, then imports modules that import it back
    "cmds/__init__.py": "OUTCOME = 1\nfrom pkg.cmds import run  # noqa: E402\n",
    "cmds/run.py": "from pkg.cmds import OUTCOME\nfrom pkg.cmds.util import helper\n",
    "cmds/util.py": "from . import base\n",
    "cmds/base.py": "",
}


def test_the_checker_finds_planted_cycles(tmp_path: Path) -> None:
    for name, text in PLANTED.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a.one"] == {"pkg.b", "pkg.b.two"}
    assert graph["pkg.b.two"] == {"pkg.a", "pkg.a.one"}
    assert graph["pkg.c"] == {"pkg.a", "pkg.a.one"}
    assert graph["pkg.cmds.util"] == {"pkg.cmds.base"}  # a sibling, not the package that holds it
    assert cycles(graph) == [["pkg.a.one", "pkg.b.two", "pkg.a.one"], ["pkg.cmds", "pkg.cmds.run", "pkg.cmds"]]
    assert cycles(package_graph(graph)) == [["a", "b", "a"]]
