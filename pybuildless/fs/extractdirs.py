"""The directories one layer extraction writes into: resolved safely, kept open, and fresh mode.

Every entry is created relative to an fd of its parent directory. ``parent`` resolves a
directory inside the root as if chrooted (``secure.walk_in_root``) and keeps its fd for the
following entries.

Fresh mode, when the root is empty at the start (a layer store entry, an empty destination):
every name in a directory this layer made is then one of its own entries, so the extractor
knows what is there without asking the kernel. ``fresh_dir`` walks such directories one
component at a time from the root with ``O_NOFOLLOW`` and makes a missing parent itself; a
name this layer used for anything but a directory (a symlink it planted, a file) is never
walked through: the caller leaves fresh mode and resolves it the careful way, after the pool
has finished every creation queued before. New entries in fresh directories need no lstat,
and files and symlinks are created by the pool's threads.
"""

from __future__ import annotations

import os
import stat

from pybuildless.errors import LayerSecurityError
from pybuildless.fs import secure
from pybuildless.fs.extractpool import WriterPool

_WRITERS = 4  # threads creating entries in fresh mode: inode creation waits in the kernel
_POOL_BYTES = 16 << 20  # file data read but not yet written, at most (plus one bigger file)
_POOL_JOBS = 256
_FRESH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# a parent the layer does not carry, whatever the umask (moby's layer unpacking: go-archive's
# ImpliedDirectoryMode, chmod'ed after the mkdir; vendored in moby/moby@b985e2313a86)
IMPLIED_DIR_MODE = 0o755


def split(rel: str) -> tuple[str, str]:
    parent, _, base = rel.rpartition("/")
    return parent, base


def implied_dir_mode(fd: int, _in_root: str = "") -> None:
    """Give the directory of O_PATH fd ``fd``, just made for a parent the layer does not carry,
    IMPLIED_DIR_MODE (mkdir's mode is cut by the umask; fchmod refuses an O_PATH fd).

    In a set-group-ID parent mkdir(2) also gave it S_ISGID and the parent's group: go-archive keeps
    the bit (it chmods only when the permission bits differ) and chowns to root (moby/sys/user
    idtools_unix.go mkdirAs -> setPermissions, vendored in moby/buildkit@73ed6825c4b7; moby v20.10.24
    pkg/idtools MkdirAllAndChownNew), as Docker's and BuildKit's extraction (layers, ADD) gives."""
    real = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    try:
        st = os.fstat(real)
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(real, os.geteuid(), os.getegid())
        os.fchmod(real, IMPLIED_DIR_MODE | (st.st_mode & stat.S_ISGID))
    finally:
        os.close(real)


class Directories:
    """Directory fds of one extraction (a mixin of the extractor: it owns ``ignore`` and
    ``layer_paths``, the relative paths of the entries applied so far)."""

    ignore: object
    layer_paths: set[str]

    def open_root(self, root) -> None:
        self.rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root_real = os.path.realpath(root)
        self.in_place = self.root_real == "/"
        self._parents: dict[str, tuple[int, str]] = {}
        self.pool: WriterPool | None = None
        self.fresh: set[str] = set()  # directories this layer made (mkdir), relative
        if not self.in_place and self._root_is_empty():
            self.fresh.add("")
            self.pool = WriterPool(_WRITERS, _POOL_BYTES, _POOL_JOBS)

    def _root_is_empty(self) -> bool:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.rootfd)
        try:
            return not os.listdir(fd)
        finally:
            os.close(fd)

    def leave_fresh_mode(self) -> None:
        """Wait for the pool; the rest of the layer is applied one entry after another."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            self.fresh.clear()
            try:
                pool.drain()
            finally:
                pool.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.abort()  # before the fds its jobs use are closed
        self._drop_cache()
        os.close(self.rootfd)

    def _drop_cache(self) -> None:
        for fd, _ in self._parents.values():
            os.close(fd)
        self._parents.clear()

    def _drop_cache_keep(self, keep_fd: int) -> None:
        """Forget cached fds (some may point into a removed tree) but keep the one in use."""
        for rel, (fd, real) in list(self._parents.items()):
            if fd != keep_fd:
                os.close(fd)
                del self._parents[rel]

    def _image_path(self, fd: int) -> str:
        """The resolved path of a directory fd, as an absolute path inside the root."""
        if not self.ignore:
            return ""  # only needed for ignore checks
        real = secure.fd_path(fd)
        if self.in_place:
            return real
        if real == self.root_real:
            return "/"
        if real.startswith(self.root_real + "/"):
            return real[len(self.root_real):]
        raise LayerSecurityError(f"resolution left the root: {real}")

    def parent(self, rel: str, *, create: bool) -> tuple[int, str]:
        """(O_PATH fd, resolved image path) of directory ``rel``; cached."""
        hit = self._parents.get(rel)
        if hit is not None:
            return hit
        try:
            fd = secure.walk_in_root(self.rootfd, rel)
        except FileNotFoundError:
            if not create:
                raise
            fd = secure.walk(self.rootfd, rel, missing="create", mode=IMPLIED_DIR_MODE,
                             on_create=implied_dir_mode).fd
        entry = (fd, self._image_path(fd))
        self._parents[rel] = entry
        return entry

    def fresh_dir(self, rel: str) -> tuple[int, str] | None:
        """(fd, image path) of directory ``rel`` when this layer made it (fresh mode), making
        it when missing; None when the path is something else of this layer (never followed)."""
        hit = self._parents.get(rel)
        if hit is not None:
            return hit if rel in self.fresh else None
        if rel == "":
            fd = os.open(".", _FRESH_DIR, dir_fd=self.rootfd)
        else:
            if rel not in self.fresh and rel in self.layer_paths:
                return None
            parent, base = split(rel)
            up = self.fresh_dir(parent)
            if up is None:
                return None
            made = rel not in self.fresh
            if made:
                os.mkdir(base, IMPLIED_DIR_MODE, dir_fd=up[0])  # a parent the tar does not carry
                self.fresh.add(rel)
            fd = os.open(base, _FRESH_DIR, dir_fd=up[0])
            if made:
                implied_dir_mode(fd)
        entry = self._parents[rel] = (fd, self._image_path(fd))
        return entry
