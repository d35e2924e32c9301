"""A package's public names, each loaded from its submodule on first use (PEP 562).

Importing one submodule of a package runs the package's ``__init__`` first. When that
``__init__`` imports every submodule to re-export their names, a build that needs one small
module (``fs.mountinfo`` to clean up, ``sandbox.userns`` to pick the isolation) pays for all of
them: tar and compression, seccomp tables, the layer store. With ``lazy_exports`` the package
keeps its names (``from pybuildless.fs import write_layer`` still works) and a submodule is
imported when one of its names is first read.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a public name to the
    submodule (relative to the package) that defines it, or to ``submodule:name`` when the
    package exports it under another name."""

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
