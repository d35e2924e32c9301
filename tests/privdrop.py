"""Run a check in a forked child: as an unprivileged user (uid/gid 65534, no groups), or after any setup."""

from __future__ import annotations

import os
import traceback
from typing import Callable


def as_nobody(fn: Callable[[], int | None]) -> int:
    """The child's exit status: what ``fn()`` returns (None counts as 0), 1 if it raised (the
    traceback is printed, so a failed assert in the child shows in the test's output)."""

    def drop() -> None:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)

    return in_child(drop, fn)


def in_child(setup: Callable[[], None], fn: Callable[[], int | None]) -> int:
    """``setup()`` then ``fn()`` in a forked child; its exit status as ``as_nobody`` describes it
    (``setup`` may end the child itself with a status of its own)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            setup()
            code = fn() or 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
