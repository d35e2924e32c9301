"""How the benchmarks start pybuildless: the way the executor image's entry point does.

The executor image runs ``/kaniko/executor``, a script whose ``#!`` line is ``python3 -IBS``
(docker/assemble_runtime.py): no ``site`` module, so no ``.pth`` file of any site-packages runs,
no user site, no ``PYTHON*`` variables, and the one package directory is put on ``sys.path`` by
the script itself. A ``python3 -m pybuildless`` on a development machine pays for whatever that
machine's site-packages hooks import at start-up (here: certifi through a CA hook, coverage's
start-up hook, the editable install's finder, ~30 ms before the first line of pybuildless); a
build in the shipped image never does. So the benchmarks run pybuildless with ``-I -S`` and
``sys.path`` set explicitly: the standard library, then the source tree measured, then the
directories holding its runtime dependencies (requests, click, ... and what they require, as
listed in the tree's pyproject.toml), with no ``.pth`` processing.

Bytecode: ``-B`` as in the image (every tree is byte-compiled before timing), or with
``pycache_prefix`` the caches live under that directory (``-X pycache_prefix``: ``-I`` ignores
``PYTHONPYCACHEPREFIX``) and are written there by the first, untimed run.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path


def dependency_dirs(source: Path) -> list[str]:
    """The directories holding the runtime dependencies of the tree's pyproject.toml and everything
    they require (extras left out), in a stable order; SystemExit naming a missing one."""
    declared = tomllib.loads((source / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = list(declared)
    seen: set[str] = set()
    dirs: dict[str, None] = {}
    while todo:
        req = todo.pop()
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
        marker = req.partition(";")[2]
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen or "extra" in marker:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if marker:  # e.g. a backport for older Pythons: not needed here
                continue
            raise SystemExit(f"{source / 'pyproject.toml'}: dependency {name} is not installed") from None
        dirs[str(Path(dist.locate_file("")).resolve())] = None
        todo.extend(dist.requires or [])
    return sorted(dirs)


def bootstrap(source: Path, body: str, *, prelude: str = "") -> str:
    """The ``-c`` program: ``prelude``, then ``sys.path`` as the image's entry point sets it (the
    package directories appended after the standard library), then ``body``."""
    paths = [str(source.resolve()), *dependency_dirs(source)]
    return f"{prelude}\nimport sys\nsys.path += {paths!r}\n{body}\n"


def entry_body(entry: str = "main", profile: Path | None = None) -> str:
    """Run ``pybuildless.cli.<entry>`` (``main``: the ``pybuildless`` command, ``executor_main``:
    Kaniko's ``executor``) on ``sys.argv[1:]``, under cProfile writing to ``profile`` if given
    (the exit status is kept: the profile is written while the SystemExit passes)."""
    run = f"from pybuildless.cli import {entry}\n{entry}()"
    if profile is None:
        return run
    return ("import cProfile\n_profiler = cProfile.Profile()\n_profiler.enable()\ntry:\n"
            + "".join(f"    {line}\n" for line in run.splitlines())
            + f"finally:\n    _profiler.disable()\n    _profiler.dump_stats({str(profile)!r})")


def isolated_argv(source: Path, args: list[str], *, entry: str = "main", profile: Path | None = None,
                  pycache_prefix: Path | None = None, prelude: str = "") -> list[str]:
    """``python -I -S`` running pybuildless from ``source`` with ``args``, as the executor image does."""
    flags = ["-X", f"pycache_prefix={pycache_prefix}"] if pycache_prefix is not None else ["-B"]
    return [sys.executable, "-I", "-S", *flags, "-c", bootstrap(source, entry_body(entry, profile), prelude=prelude),
            *args]
