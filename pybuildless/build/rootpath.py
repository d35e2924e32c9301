"""Resolve a path inside a root directory as a chroot would see it.

Symlinks are followed within the root: an absolute target restarts at the
root, ``..`` stops at the root. The result is a host path that is always the
root or below it, so COPY can never write outside the stage's filesystem.
"""

from __future__ import annotations

import errno
import os
import stat

from pybuildless.errors import BuildError

MAX_LINKS = 255


def resolve_in_root(root: str, path: str, *, follow_final: bool = True) -> str:
    """Host path of ``path`` (absolute inside ``root``), following links within root.

    Components that do not exist are appended lexically. With
    ``follow_final=False`` a final symlink is not followed (it is the thing to
    replace or copy).
    """
    root = os.path.abspath(root)
    todo = [c for c in path.split("/") if c not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        comp = todo.pop(0)
        if comp == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, comp)
        last = not todo
        try:
            st = os.lstat(candidate)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                done.append(comp)
                done.extend(c for c in todo if c not in ("", "."))
                # Lexically clean what remains (".." in a missing tail).
                return _clean(root, done)
            raise
        if stat.S_ISLNK(st.st_mode) and (follow_final or not last):
            links += 1
            if links > MAX_LINKS:
                raise BuildError(f"too many levels of symbolic links resolving {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [c for c in target.split("/") if c not in ("", ".")] + todo
            continue
        done.append(comp)
    return os.path.join(root, *done) if done else root


def _clean(root: str, parts: list[str]) -> str:
    out: list[str] = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        elif p not in ("", "."):
            out.append(p)
    return os.path.join(root, *out) if out else root


def in_root(root: str, host_path: str) -> str:
    """The absolute in-root path for a host path below ``root``."""
    rel = os.path.relpath(host_path, root)
    return "/" if rel == "." else "/" + rel
