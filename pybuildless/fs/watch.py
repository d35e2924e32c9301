"""inotify: which paths may have changed since the last snapshot.

A snapshot after a RUN step otherwise has to lstat every file of the root. With
a watch on every directory, the kernel tells us the names that were created,
deleted, written or had their metadata changed, and only those are looked at.
Whenever the record may be incomplete (queue overflow, a directory renamed,
too many watches) the caller falls back to a full walk.

Known blind spot, shared with every inotify user: writes through a shared
``mmap`` raise no event. ``Snapshotter(watch=False)`` walks everything.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading

log = logging.getLogger(__name__)

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
_MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
         | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
_HEADER = struct.Struct("iIII")

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class Incomplete(Exception):
    """The event record cannot be trusted; walk everything."""


class DirWatcher:
    """Watches a set of directories (paths relative to ``root``)."""

    def __init__(self, root: str) -> None:
        self.root = root
        fd = _lib().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self.wds: dict[int, str] = {}
        self.broken = False

    def close(self) -> None:
        """Close the inotify fd, which drops all its watches in the kernel (none removed one by one).

        The kernel's release of an inotify instance waits for a grace period before it returns:
        10-20 ms of wall time and no CPU, whatever the number of watches. A thread waits for it
        while the build goes on; it is not a daemon, so the process still waits for it at exit.
        """
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            threading.Thread(target=os.close, args=(fd,), name="inotify-close").start()
        except RuntimeError:  # no new threads at interpreter shutdown (a __del__): close here
            os.close(fd)

    def add(self, rel: str) -> None:
        path = os.fsencode(os.path.join(self.root, rel) if rel else self.root)
        wd = _lib().inotify_add_watch(self.fd, path, _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return  # gone already: its parent's events say so
            log.debug("inotify_add_watch(%s): %s; falling back to full walks", rel, os.strerror(err))
            self.broken = True
            return
        self.wds[wd] = rel

    def drain(self) -> tuple[set[str], set[str]]:
        """(paths named by the events since the last drain plus their directories,
        directories created meanwhile).

        A directory deleted and created again may get its old inode number
        back; the creation event is what tells it apart from an untouched one.
        """
        dirty: set[str] = set()
        created_dirs: set[str] = set()
        incomplete = self.broken
        while True:
            try:
                buf = os.read(self.fd, 1 << 18)
            except BlockingIOError:
                break
            off = 0
            while off < len(buf):
                wd, mask, _cookie, length = _HEADER.unpack_from(buf, off)
                name = buf[off + _HEADER.size: off + _HEADER.size + length].rstrip(b"\0")
                off += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    incomplete = True
                    continue
                if mask & IN_IGNORED:
                    self.wds.pop(wd, None)
                    continue
                base = self.wds.get(wd)
                if base is None:
                    continue
                if mask & IN_MOVE_SELF or (mask & IN_ISDIR and mask & (IN_MOVED_FROM | IN_MOVED_TO)):
                    incomplete = True  # a directory moved: paths of the watches below it are stale
                    continue
                if mask & IN_DELETE_SELF:
                    continue  # reported by the parent as IN_DELETE
                dirty.add(base)
                if name:
                    child = os.fsdecode(name)
                    path = f"{base}/{child}" if base else child
                    dirty.add(path)
                    if mask & IN_ISDIR and mask & IN_CREATE:
                        created_dirs.add(path)
        if incomplete:
            raise Incomplete()
        dirty.discard("")
        return dirty, created_dirs
