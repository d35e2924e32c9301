"""Start-up work the program's entry points put off: requests' charset detector, collections.

``import requests`` imports a detector, ``chardet`` or ``charset_normalizer`` (requests/compat.py,
``_resolve_char_detection``; requests/__init__.py reads its ``__version__`` for a compatibility
warning), used only to guess the encoding of a text body that names none (``Response.text``,
``Response.apparent_encoding``). Importing charset_normalizer 3.4 costs ~105 M instructions, a
tenth of a whole small build (``valgrind --tool=callgrind``: 517 M for ``import requests`` with
it, 412 M with this stand-in), and a build reads no body that way: the registry client takes
bodies as bytes and parses them with ``json.loads`` itself.

So the program's entry points put a stand-in module under each detector's name that carries the
package's version, read from its ``version.py`` (the only thing requests reads at import), and
imports the real package the first time anything else is asked of it. A detector that is not
installed, or whose version cannot be read, is left to the usual import.

The cyclic garbage collector runs every 700 new container objects; importing a build's ~400
modules (functions, classes, their dicts) sets it off again and again over a heap that only
grows: ~31 M instructions of ~1,010 M for those imports (callgrind). Start-up allocates next to
no cyclic garbage, so the entry points pause the collector until the build is about to run and
then freeze what exists (``gc.freeze``: later collections leave the modules alone), as a
short-lived tool may (mypy raises its thresholds for the same reason).
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import sys
import types
from importlib.machinery import PathFinder

DETECTORS = ("charset_normalizer", "chardet")
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


class _StandIn(types.ModuleType):
    """Serves ``__version__``; any other attribute imports the real package and comes from it."""

    def __getattr__(self, name: str) -> object:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_real"] = real
        return getattr(real, name)


def defer_detectors() -> None:
    """Put stand-ins in ``sys.modules`` for the detectors not imported yet."""
    for name in DETECTORS:
        if name in sys.modules:
            continue
        spec = PathFinder.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        version = _package_version(spec.submodule_search_locations)
        if version is not None:
            stand_in = _StandIn(name)
            stand_in.__version__ = version
            # The package's own: ``from charset_normalizer import __version__`` looks for
            # ``__path__`` (importlib's _handle_fromlist), and a submodule imports as usual.
            stand_in.__path__ = list(spec.submodule_search_locations)
            sys.modules[name] = stand_in


def _package_version(directories: list[str]) -> str | None:
    for directory in directories:
        try:
            with open(os.path.join(directory, "version.py"), encoding="utf-8") as f:
                found = _VERSION.search(f.read())
        except OSError:
            continue
        if found:
            return found.group(1)
    return None


_gc_paused = False


def pause_collector() -> None:
    """Stop the cyclic collector for the start-up of the program (its entry points only)."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def start_collector() -> None:
    """Start-up is over: what it made is kept out of later collections, which run as usual."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()
