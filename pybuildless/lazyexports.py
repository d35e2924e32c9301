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
from typing import Any, Callable, MutableMapping


def lazy_exports(package: str, exports: dict[str, str], *, module: str | None = None,
                 namespace: MutableMapping[str, Any] | None = None,
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a public name to the
    submodule (relative to the package) that defines it, or to ``submodule:name`` when the
    package exports it under another name.

    For a module that is not the package itself (``dockerfile.instructions`` exporting the names
    of its sibling modules), ``module`` names it in errors. With ``namespace`` (the module's
    ``globals()``) a name is stored there once loaded, so later reads are plain lookups, and
    ``__dir__`` lists the namespace's names too."""
    owner = module or package

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {owner!r} has no attribute {name!r}")
        submodule, _, attribute = where.partition(":")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), attribute or name)
        if namespace is not None:
            namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *(namespace or ())})

    return __getattr__, __dir__
