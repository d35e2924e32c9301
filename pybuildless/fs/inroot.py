"""Paths inside a root directory (a stage root, a context, an image), never leaving it.

Every path is resolved from an fd of the root as a process chrooted into it would see
it: symlinks (absolute, relative, ``..`` chains, symlinked parents) are followed
*inside* the root and ``..`` stops at the root. ``read_file`` uses ``openat2`` with
``RESOLVE_IN_ROOT`` where the kernel has it; everything else, and ``read_file`` where
``openat2`` is missing, walks one component at a time with ``O_NOFOLLOW``
(``secure.walk``). Writes happen relative to the fd of the directory the walk reached,
so nothing is re-resolved by path between the check and the write.

Nothing else runs in the root while the builder writes into it (a RUN step's processes
are all gone by then), so the host paths ``resolve`` returns stay where they were
resolved; they name the root's own directories (lexically below the root given), which
is what mount points and diagnostics need.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable, Union

from pybuildless.errors import LayerSecurityError
from pybuildless.fs import owners, secure

Owner = Union[tuple[int, int], Callable[[], Union[tuple[int, int], None]], None]
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class StubError(Exception):
    """A mount point cannot be made: the message says why (callers prefix what it was for)."""


class Root:
    """A root directory opened once; every method resolves its ``path`` argument inside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))
        self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Root":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _walk(self, path: str, **kw) -> secure.Walked:
        try:
            return secure.walk(self.fd, path, **kw)
        except OSError as exc:
            raise self._loop_error(exc, path) from None

    def _loop_error(self, exc: OSError, path: str) -> Exception:
        """ELOOP as a clear error (a link cycle planted in an image); other errors as they are."""
        if exc.errno == errno.ELOOP:
            return LayerSecurityError(f"too many levels of symbolic links resolving {path!r} in {self.path}")
        return exc

    def open_dir(self, path: str) -> int:
        """An ``O_PATH`` fd of directory ``path`` (the caller closes it); FileNotFoundError or
        NotADirectoryError when there is none."""
        try:
            return secure.walk_in_root(self.fd, path)
        except OSError as exc:
            raise self._loop_error(exc, path) from None

    def host(self, walked: secure.Walked) -> Path:
        return self.path.joinpath(*walked.names, *walked.tail)

    def resolve(self, path: str, *, follow_final: bool = True) -> Path:
        """The host path ``path`` designates; missing components are appended as they are, so the
        result also names a file or directory still to be made. With ``follow_final=False`` a final
        symlink is the result itself (like ``lstat``)."""
        walked = self._walk(path, follow_final=follow_final)
        os.close(walked.fd)
        return self.host(walked)

    def lstat(self, path: str, *, follow_final: bool = True) -> os.stat_result | None:
        """The status of what ``path`` leads to (a final symlink only when not followed); None if missing."""
        walked = self._walk(path, follow_final=follow_final)
        try:
            if not walked.tail:
                return os.stat(walked.fd)
            return walked.tail_st if len(walked.tail) == 1 else None
        finally:
            os.close(walked.fd)

    def is_dir(self, path: str) -> bool:
        st = self.lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def makedirs(self, path: str, *, mode: int = 0o755, owner: Owner = None) -> list[str]:
        """``mkdir -p`` inside the root; returns the in-root paths of the directories it made.

        Only the directories made get ``mode`` (whatever the umask, plus the set-group-ID bit mkdir(2)
        gives inside a set-group-ID directory) and ``owner`` (a pair, or a callable asked once, when
        the first one is made; None: no chown, the owner mkdir(2) gives); existing ones are left alone, as
        BuildKit's MkdirAll does (tonistiigi/fsutil copy/mkdir.go, vendored in
        moby/buildkit@73ed6825c4b7, chowns and chmods only ``createdDirs``). An entry that is not
        a directory on the way raises NotADirectoryError naming its in-root path.
        """
        made: list[str] = []
        resolved_owner: list[tuple[int, int]] = []

        def created(fd: int, in_root: str) -> None:
            made.append(in_root)
            with _opened(fd) as real:
                # mkdir(2) in a set-group-ID directory gives the new one the parent's group and
                # S_ISGID: kept, as BuildKit's MkdirAll (os.Mkdir, then a chown only for USER or
                # --chown) keeps them
                os.fchmod(real, mode | (os.fstat(real).st_mode & stat.S_ISGID))
                if owner is not None:
                    if not resolved_owner:
                        resolved_owner.append(owner() if callable(owner) else owner)
                    if resolved_owner[0] is not None:
                        owners.fchown_or_record(real, *resolved_owner[0])

        try:
            walked = self._walk(path, missing="create", mode=mode, on_create=created)
        except NotADirectoryError:
            blocker = self._walk(path)  # say which entry is in the way
            os.close(blocker.fd)
            where = "/" + "/".join(blocker.names + blocker.tail[:1])
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", where) from None
        os.close(walked.fd)
        return made

    def make_stub(self, path: str, *, directory: bool, created: list[Path],
                  max_new_parents: int | None = None) -> Path:
        """A mount point at ``path``: kept when it exists with the right type (any non-directory
        does for a file), else made (0755 directory or empty 0644 file, owned by the caller), with
        its missing parents (0755; at most ``max_new_parents``). What is made is appended to
        ``created`` (host paths, parents first) so the caller can remove it after the step."""
        walked = self._walk(path)
        try:
            host = self.host(walked)
            if not walked.names and not walked.tail:
                raise StubError("it resolves to the root itself")
            if not walked.tail or (len(walked.tail) == 1 and walked.tail_st is not None):
                if (not walked.tail) != directory:
                    raise StubError(f"it exists and is not a {'directory' if directory else 'file'}")
                return host
            if walked.tail_st is not None:
                raise StubError("a parent is not a directory")
            parents = walked.tail[:-1]
            if max_new_parents is not None and len(parents) > max_new_parents:
                raise StubError("its parent directory is missing")
            fd = os.dup(walked.fd)
            try:
                for i, name in enumerate(parents):
                    os.mkdir(name, 0o755, dir_fd=fd)
                    created.append(self.path.joinpath(*walked.names, *parents[:i + 1]))
                    nxt = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                name = walked.tail[-1]
                if directory:
                    os.mkdir(name, 0o755, dir_fd=fd)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=fd))
                created.append(host)
            finally:
                os.close(fd)
            return host
        finally:
            os.close(walked.fd)

    def write_file(self, path: str, data: bytes, mode: int) -> Path:
        """Write a new regular file at ``path`` (its parent must exist); whatever non-directory was
        there, a planted symlink included, is replaced, never written through."""
        walked = self._walk(path, follow_final=False)
        try:
            if not walked.tail:
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            if len(walked.tail) > 1:
                raise FileNotFoundError(errno.ENOENT, "parent directory missing", path)
            name = walked.tail[0]
            if walked.tail_st is not None:
                os.unlink(name, dir_fd=walked.fd)
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=_real(walked.fd))
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                os.fchmod(out.fileno(), mode)
            return self.host(walked)
        finally:
            os.close(walked.fd)

    def read_file(self, path: str, *, limit: int = 16 * 1024 * 1024) -> bytes | None:
        """A regular file's content; None when it does not exist. Raises LayerSecurityError for
        anything else (a FIFO at /etc/passwd would otherwise hang the build) or a file over ``limit``."""
        fd = self._open_for_reading(path)
        if fd is None:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LayerSecurityError(f"{path} in {self.path} is not a regular file")
            chunks: list[bytes] = []
            total = 0
            while chunk := os.read(fd, 65536):
                total += len(chunk)
                if total > limit:
                    raise LayerSecurityError(f"{path} in {self.path} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _open_for_reading(self, path: str) -> int | None:
        try:
            fd = secure.openat2_in_root(self.fd, path, _READ_FLAGS)
            if fd is not None:
                return fd
            walked = self._walk(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except LayerSecurityError:
            raise
        except OSError as exc:
            error = self._loop_error(exc, path)
            if isinstance(error, LayerSecurityError):
                raise error from None
            raise LayerSecurityError(f"cannot open {path} in {self.path}: {exc.strerror}") from None
        try:
            if not walked.tail:
                return os.open(".", _READ_FLAGS, dir_fd=walked.fd)  # a directory: refused by the caller
            if len(walked.tail) > 1 or walked.tail_st is None:
                return None
            return os.open(walked.tail[0], _READ_FLAGS | os.O_NOFOLLOW, dir_fd=walked.fd)
        finally:
            os.close(walked.fd)


class _opened:
    """A readable fd for an ``O_PATH`` directory fd (fchmod, fchown and xattrs refuse ``O_PATH``)."""

    def __init__(self, path_fd: int) -> None:
        self.fd = _real(path_fd)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _real(path_fd: int) -> int:
    return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=path_fd)


def resolve(root: str | os.PathLike[str], path: str, *, follow_final: bool = True) -> Path:
    """``Root(root).resolve(path)`` for one path."""
    with Root(root) as r:
        return r.resolve(path, follow_final=follow_final)


def makedirs(root: str | os.PathLike[str], path: str, *, mode: int = 0o755, owner: Owner = None) -> list[str]:
    """``Root(root).makedirs(path)`` for one path."""
    with Root(root) as r:
        return r.makedirs(path, mode=mode, owner=owner)


def write_file(root: str | os.PathLike[str], path: str, data: bytes, mode: int) -> Path:
    """``Root(root).write_file(path)`` for one path."""
    with Root(root) as r:
        return r.write_file(path, data, mode)


def read_file(root: str | os.PathLike[str], path: str, *, limit: int = 16 * 1024 * 1024) -> bytes | None:
    """``Root(root).read_file(path)`` for one path."""
    with Root(root) as r:
        return r.read_file(path, limit=limit)


def is_dir(root: str | os.PathLike[str], path: str) -> bool:
    """``Root(root).is_dir(path)`` for one path."""
    with Root(root) as r:
        return r.is_dir(path)
