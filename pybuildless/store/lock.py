"""Per-entry locks of the layer store (flock(2) on one small file per diff_id).

* exclusive: checking, unpacking or removing the entry;
* shared: the entry is in use (a stage root reads it, an overlay has it as a
  lower dir) and must not be removed.

flock locks belong to the open file description, so two threads of one
process exclude each other like two processes do, and the kernel drops a
lock when its holder dies: a process killed mid-unpack never blocks anyone.
Converting a lock is not atomic (flock(2)): callers re-check what they saw.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class EntryLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    def exclusive(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def shared(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def __enter__(self) -> "EntryLock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
