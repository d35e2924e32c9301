"""Owners that cannot be applied, recorded beside the file (rootless builds with a single id map).

In a user namespace that maps only the invoking user (to 0), ``chown`` to any
other id fails with EINVAL. Extraction then leaves the file owned by 0 and
records the owner the layer wanted in the ``user.pybuildless.owner`` xattr
(``b"UID:GID"``); the layer writer reads it back, so the image carries the
right owner. Symlinks cannot carry ``user.*`` xattrs: theirs stay 0:0
(the owner of a symlink is ignored by every runtime).

The xattr never leaves the builder: layers read from registries have it
stripped on extraction, layers written have it replaced by the tar owner.
"""

from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger(__name__)

OWNER_XATTR = "user.pybuildless.owner"


def encode(uid: int, gid: int) -> bytes:
    return f"{uid}:{gid}".encode()


def decode(value: bytes) -> tuple[int, int] | None:
    uid, sep, gid = value.partition(b":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        return None
    return int(uid), int(gid)


def fchown_or_record(fd: int, uid: int, gid: int) -> None:
    """``fchown``; when the ids are not mapped here, record them in the xattr instead."""
    try:
        os.fchown(fd, uid, gid)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.setxattr(fd, OWNER_XATTR, encode(uid, gid))
        return
    try:
        os.removexattr(fd, OWNER_XATTR)  # a real owner now: a stale record must not override it
    except OSError:
        pass


def lchown_or_skip(name: str, uid: int, gid: int, *, dir_fd: int | None = None) -> None:
    """Symlinks: chown when the ids are mapped, else keep them as they are (no xattrs on symlinks)."""
    try:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        log.debug("symlink %s: owner %d:%d is not mapped here; kept as is", name, uid, gid)


def recorded_owner(path: str) -> tuple[int, int] | None:
    """The owner recorded for ``path`` (None when there is none)."""
    try:
        return decode(os.getxattr(path, OWNER_XATTR, follow_symlinks=False))
    except OSError:
        return None


def chown_or_record(path: str, uid: int, gid: int) -> None:
    """Path form of ``fchown_or_record`` (never follows a final symlink)."""
    if os.path.islink(path):
        lchown_or_skip(path, uid, gid)
        return
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.setxattr(path, OWNER_XATTR, encode(uid, gid), follow_symlinks=False)
        return
    try:
        os.removexattr(path, OWNER_XATTR, follow_symlinks=False)
    except OSError:
        pass
