"""Paths the builder never extracts into, snapshots or deletes.

Entries are absolute paths *inside the image root* (``/proc`` means
``<root>/proc``). A path is ignored when it equals an entry or lies under one.
Callers match on resolved paths (the extractor resolves through fds), never on
the literal text of a tar name, so a symlink cannot smuggle a write into an
ignored directory.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pybuildless.errors import UsageError
from pybuildless.fs.mountinfo import mount_points

log = logging.getLogger(__name__)


def normalise(path: str) -> str:
    """'/a/./b/' -> '/a/b'; relative paths are taken from the root."""
    norm = posixpath.normpath("/" + path)
    return "/" + norm.lstrip("/") if norm != "/" else "/"


@dataclass(frozen=True)
class IgnoreList:
    """Paths a snapshot leaves out (mounts, the executor's own files)."""

    entries: frozenset[str] = frozenset()

    @classmethod
    def of(cls, paths: Iterable[str]) -> "IgnoreList":
        entries = set()
        for p in paths:
            if not p:
                continue
            n = normalise(p)
            if n == "/":
                raise UsageError("--ignore-path: refusing to ignore '/' (nothing could be built)")
            entries.add(n)
        return cls(frozenset(entries))

    @classmethod
    def empty(cls) -> "IgnoreList":
        return cls()

    @classmethod
    def for_root(cls, extra: Iterable[str] = ()) -> "IgnoreList":
        """For extraction into a plain directory: nothing ignored unless asked."""
        return cls.of(extra)

    @classmethod
    def for_in_place(
        cls,
        executor_dir: str = "/kaniko",
        *,
        ignore_var_run: bool = True,
        extra: Iterable[str] = (),
        mountinfo: str | Path = "/proc/self/mountinfo",
        resolve_symlinks: bool = True,
    ) -> "IgnoreList":
        """For building in the machine's own ``/`` (kaniko mode).

        Protects the executor's files, the kernel filesystems and every current
        mount point (re-read on each call: mounts change between stages).
        """
        paths = [executor_dir, "/proc", "/sys", "/dev", "/etc/mtab"]
        if ignore_var_run:
            paths.append("/var/run")
        paths.extend(extra)
        try:
            points = mount_points(mountinfo)
        except OSError as e:
            log.warning("cannot read %s (%s); only the default ignore paths apply", mountinfo, e)
            points = []
        paths.extend(p for p in points if p != "/")
        if resolve_symlinks:
            # /var/run is usually a link to /run: protect where it points too,
            # since matching happens on resolved paths.
            paths.extend(os.path.realpath(p) for p in list(paths) if os.path.islink(p))
        return cls.of(paths)

    def with_paths(self, paths: Iterable[str]) -> "IgnoreList":
        return IgnoreList.of([*self.entries, *paths])

    def __bool__(self) -> bool:
        return bool(self.entries)

    def is_ignored(self, path: str) -> bool:
        """True if ``path`` (absolute inside the root) equals or is under an entry."""
        if not self.entries:
            return False
        p = normalise(path)
        while True:
            if p in self.entries:
                return True
            if p == "/":
                return False
            p = posixpath.dirname(p)

    def contains_ignored(self, path: str) -> bool:
        """True if some entry lies strictly below ``path``: it must not be removed whole."""
        if not self.entries:
            return False
        p = normalise(path)
        prefix = "/" if p == "/" else p + "/"
        return any(e.startswith(prefix) for e in self.entries)
