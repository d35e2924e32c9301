"""Resolve a path as a process chrooted into ``root`` would, without leaving ``root``.

Symlinks met on the way are followed *inside* the root: an absolute target
restarts at the root, ``..`` is clamped at the root. This is what lets the
sandbox create mount points and the user lookup read ``/etc/passwd`` in a
hostile image without ever touching the host's files (same idea as
cyphar/filepath-securejoin's ``SecureJoin``).

The result is only as good as the moment it was computed: callers that then
open the path use ``O_NOFOLLOW`` on the final component so that a swap to a
symlink in between fails instead of escaping.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pybuildless.errors import LayerSecurityError

# Linux's own limit for symlinks in one lookup (MAXSYMLINKS is 40); being a
# little more generous than the kernel does not help anyone.
MAX_SYMLINKS = 40


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve_in_root(root: Path, path: str, *, follow_final: bool = True) -> Path:
    """Return the host path that ``path`` (as seen inside ``root``) designates.

    Components that do not exist are appended literally, so the result is
    also usable to create a missing file or directory. With
    ``follow_final=False`` a final symlink is not followed (like ``lstat``).
    """
    root = Path(os.path.abspath(root))
    resolved: list[str] = []
    pending = _split(path)
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            # Missing: everything below is missing too and gets appended
            # literally; a later '..' pops it and resolution resumes on real
            # components, so a symlink there is still resolved in-root.
            resolved.append(part)
            continue
        is_last = not pending
        if stat.S_ISLNK(st.st_mode) and (follow_final or not is_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise LayerSecurityError(f"too many levels of symbolic links resolving {path!r} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = _split(target) + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def read_file_in_root(root: Path, path: str, *, limit: int = 16 * 1024 * 1024) -> bytes | None:
    """Read a regular file inside ``root``; ``None`` if it does not exist.

    Raises ``LayerSecurityError`` for something that is not a regular file
    (a FIFO at /etc/passwd would otherwise hang the build).
    """
    host_path = resolve_in_root(root, path)
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise LayerSecurityError(f"cannot open {path} in {root}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LayerSecurityError(f"{path} in {root} is not a regular file")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise LayerSecurityError(f"{path} in {root} is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
