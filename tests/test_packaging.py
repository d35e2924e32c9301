"""Runtime dependencies are exactly what the package imports; test-only ones stay in the test extra.

The executor image installs the runtime dependencies only (Dockerfile.executor: ``pip install /src``),
so a runtime import of a test-only distribution would break it, and a runtime dependency nothing
imports would only make it bigger.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pybuildless"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _dist_name(requirement: str) -> str:
    """PEP 503 normalised name of a requirement string (``moto[server]>=5.0`` -> ``moto``)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> dict[str, set[tuple[str, bool]]]:
    """Top-level module name -> {(file, imported at module level)} for every non-stdlib import."""
    found: dict[str, set[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "pybuildless" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add((str(path.relative_to(ROOT)), id(node) in top_level))
    return found


def _distributions(module: str) -> set[str]:
    return {_dist_name(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


def test_runtime_dependencies_are_what_the_package_imports() -> None:
    runtime = {_dist_name(r) for r in PROJECT["dependencies"]}
    optional = {_dist_name(r) for r in PROJECT["optional-dependencies"]["s3"]}
    imported: dict[str, str] = {}
    for module, places in _third_party_imports().items():
        for dist in _distributions(module):
            imported[dist] = sorted(places)[0][0]
    undeclared = {d: f for d, f in imported.items() if d not in runtime | optional}
    assert not undeclared, f"imported at run time but not a runtime dependency: {undeclared}"
    unused = runtime - set(imported)
    assert not unused, f"runtime dependencies nothing in pybuildless/ imports: {sorted(unused)}"


def test_optional_dependencies_are_imported_only_when_used() -> None:
    optional = {_dist_name(r) for r in PROJECT["optional-dependencies"]["s3"]}
    for module, places in _third_party_imports().items():
        if _distributions(module) & optional:
            at_module_level = sorted(f for f, top in places if top)
            assert not at_module_level, f"{module} (optional) is imported when these modules load: {at_module_level}"


def test_test_only_dependencies_are_not_needed_to_import_any_module() -> None:
    """Every module imports with the test extra's distributions made unimportable."""
    runtime = {_dist_name(r) for r in PROJECT["dependencies"]}
    test_only = {_dist_name(r) for r in PROJECT["optional-dependencies"]["test"]} - runtime
    blocked = sorted(m for m, dists in importlib.metadata.packages_distributions().items()
                     if {_dist_name(d) for d in dists} & test_only and m.isidentifier())
    assert {"yaml", "dockerfile_parse"} <= set(blocked)
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")
    script = (
        "import importlib, sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
