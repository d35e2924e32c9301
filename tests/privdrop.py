"""Run a check as an unprivileged user: in a forked child with uid/gid 65534 and no groups."""

from __future__ import annotations

import os
import traceback
from typing import Callable


def as_nobody(fn: Callable[[], int | None]) -> int:
    """The child's exit status: what ``fn()`` returns (None counts as 0), 1 if it raised (the
    traceback is printed, so a failed assert in the child shows in the test's output)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = fn() or 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
