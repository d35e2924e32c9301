"""pytest plugin for mutation runs of code that runs only in forked children
(``-p tests.mutation.childcalls``, added by run.py for a group with ``forked_children = true``).

mutmut picks the tests of a mutant from the calls it records while the tests run once
unmutated (its "stats" pass): each mutated function's trampoline notes its name in the pytest
process, which mutmut files under the running test. A call made in a forked child (the
sandbox's monitor and init, which set up the RUN step's mounts) is noted in the child's copy of
that record and lost when it exits, so mutmut sees no test for those functions and never runs
their mutants ("no tests").

In the stats pass this plugin gives the trampolines a recorder that, in any process other than
pytest's own, appends the function's name to a shared anonymous memory map made before any
test forks. A mapping survives fork, chroot, pivot_root, new namespaces and the closing of every
file descriptor, and goes away at exec, which is what the sandbox's children do in that order.
After each test the names the children wrote are handed to mutmut's own recorder in the pytest
process, so they are filed under that test like an in-process call. Outside the stats pass (the
runs of mutants, plain test runs) the plugin does nothing.
"""

from __future__ import annotations

import mmap
import os
import struct

import pytest

_SIZE = 1 << 20
_HEADER = struct.Struct("Q")  # bytes used after the header

_area: mmap.mmap | None = None
_owner = 0
_recorded_here: set[str] = set()  # names this child already wrote (reset by each fork: see _after_fork)


def _append(name: str) -> None:
    if _area is None or name in _recorded_here:
        return
    _recorded_here.add(name)
    data = name.encode() + b"\n"
    # Children that write do so one after another (monitor, then init, then the command before
    # exec), so a plain read-modify-write of the length is enough here.
    used = _HEADER.unpack_from(_area, 0)[0]
    start = _HEADER.size + used
    if start + len(data) > _SIZE:
        return
    _area[start:start + len(data)] = data
    _HEADER.pack_into(_area, 0, used + len(data))


def _drain() -> list[str]:
    if _area is None:
        return []
    used = _HEADER.unpack_from(_area, 0)[0]
    names = bytes(_area[_HEADER.size:_HEADER.size + used]).decode().split("\n")
    _HEADER.pack_into(_area, 0, 0)
    return [n for n in names if n]


def _after_fork() -> None:
    _recorded_here.clear()


def pytest_configure(config: pytest.Config) -> None:
    global _area, _owner
    if os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return
    from mutmut.mutation import trampoline

    original = trampoline.record_trampoline_hit
    _area = mmap.mmap(-1, _SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    _owner = os.getpid()
    os.register_at_fork(after_in_child=_after_fork)

    def record(name: str, caller: str | None = None) -> None:
        if os.getpid() == _owner:
            original(name, caller)
        else:
            _append(name)

    trampoline.record_trampoline_hit = record
    config._childcalls_original = original  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # tryfirst: before mutmut's own teardown hook files the names recorded during this test
    original = getattr(item.config, "_childcalls_original", None)
    if original is not None:
        for name in _drain():
            original(name)

