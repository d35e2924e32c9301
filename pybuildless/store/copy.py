"""Laying stored layers onto a plain directory: the fallback where no overlay can be mounted.

The result is what an overlay of the same layers shows: each layer's entries
replace what the layers below have at the same path (a directory merges with
a directory, anything else replaces), a whiteout (char 0/0, or a ``.wh.NAME``
file when the store could not make char 0/0) removes the lower entry, and an
opaque directory drops the lower directory's children. Paths are never
followed through symlinks of the destination, as in an overlay.

File data is cloned (FICLONE: a reflink on btrfs, XFS, bcachefs) where the
filesystem can, else copied in the kernel (copy_file_range); never hard
linked, so a step writing into a file cannot reach the store.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pybuildless.fs import secure
from pybuildless.fs.whiteouts import WHITEOUT_PREFIX

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class CopyStats:
    """What copying a stored layer onto a root did."""

    entries: int = 0
    cloned: int = 0  # files whose data was shared by reflink
    copied: int = 0
    removed: int = 0  # lower entries hidden by whiteouts or opaque directories
    _clone_ok: bool = field(default=True, repr=False)


def copy_layers(layer_dirs: Sequence[Path | str], dest: Path | str, *, root_meta: Sequence[bool] = (),
                implicit: Sequence[frozenset[str]] = ()) -> CopyStats:
    """Lay ``layer_dirs`` (lowest first, each a store entry's ``fs``) onto the directory ``dest``.

    ``root_meta[i]`` says whether layer i's top directory carries the layer's own root
    entry (``./`` in its tar); only then does it change ``dest``'s own metadata.
    ``implicit[i]`` are the directories layer i's tar did not carry: where ``dest``
    already has them they keep their metadata, as when the tar is applied.
    """
    stats = CopyStats()
    dfd = os.open(dest, _DIR)
    try:
        for i, src in enumerate(layer_dirs):
            sfd = os.open(src, _DIR)
            layer = _Layer(stats, implicit[i] if i < len(implicit) else frozenset())
            try:
                layer.merge_dir(sfd, dfd, "")
                if i < len(root_meta) and root_meta[i]:
                    _copy_meta(sfd, dfd, os.stat(sfd))
            finally:
                layer.close()
                os.close(sfd)
    finally:
        os.close(dfd)
    return stats


class _Layer:
    def __init__(self, stats: CopyStats, implicit: frozenset[str]) -> None:
        self.stats = stats
        self.implicit = implicit
        self.links: dict[int, tuple[int, str]] = {}  # src inode -> (dest dir fd dup, name) of its first copy

    def merge_dir(self, sfd: int, dfd: int, prefix: str) -> None:
        names = os.listdir(sfd)
        oci_whiteouts = [n for n in names if n.startswith(WHITEOUT_PREFIX)]
        for name in oci_whiteouts:
            self._hide(dfd, name[len(WHITEOUT_PREFIX):])
        for name in names:
            if name in oci_whiteouts:
                continue
            st = os.lstat(name, dir_fd=sfd)
            self.stats.entries += 1
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                self._hide(dfd, name)
                continue
            try:
                old = os.lstat(name, dir_fd=dfd)
            except FileNotFoundError:
                old = None
            if stat.S_ISDIR(st.st_mode):
                self._dir(sfd, dfd, name, st, old, prefix + name)
            else:
                if old is not None:
                    secure.remove_in_dir(dfd, name)
                self._leaf(sfd, dfd, name, st)

    def _hide(self, dfd: int, name: str) -> None:
        if name and name not in (".", "..") and os.path.lexists(f"/proc/self/fd/{dfd}/{name}"):
            secure.remove_in_dir(dfd, name)
            self.stats.removed += 1

    def _dir(self, sfd: int, dfd: int, name: str, st: os.stat_result, old: os.stat_result | None,
             rel: str) -> None:
        ssub = os.open(name, _DIR, dir_fd=sfd)
        try:
            if old is not None and not stat.S_ISDIR(old.st_mode):
                secure.remove_in_dir(dfd, name)
                old = None
            if old is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            dsub = os.open(name, _DIR, dir_fd=dfd)
            try:
                if old is not None and _is_opaque(ssub):
                    for child in os.listdir(dsub):
                        secure.remove_in_dir(dsub, child)
                        self.stats.removed += 1
                keep = old is not None and rel in self.implicit
                before = os.stat(dsub) if keep else None
                self.merge_dir(ssub, dsub, rel + "/")
                if before is not None:  # not in the tar: the lower directory's metadata stays
                    os.utime(dsub, ns=(before.st_atime_ns, before.st_mtime_ns))
                else:
                    _copy_meta(ssub, dsub, st)  # last: the children moved its mtime
            finally:
                os.close(dsub)
        finally:
            os.close(ssub)

    def _leaf(self, sfd: int, dfd: int, name: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode) and st.st_nlink > 1:
            first = self.links.get(st.st_ino)
            if first is not None:
                os.link(first[1], name, src_dir_fd=first[0], dst_dir_fd=dfd, follow_symlinks=False)
                return
        if stat.S_ISREG(mode):
            self._file(sfd, dfd, name)
            if st.st_nlink > 1:
                self.links[st.st_ino] = (os.dup(dfd), name)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
        elif stat.S_ISSOCK(mode):
            return
        else:
            os.mknod(name, (mode & ~0o7777) | 0o600, st.st_rdev, dir_fd=dfd)
        path = f"/proc/self/fd/{dfd}/{name}"
        _chown(name, st, dfd)
        if not stat.S_ISLNK(mode):
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dfd)  # after chown, which clears set-id bits
            for attr, value in _xattrs(f"/proc/self/fd/{sfd}/{name}").items():
                os.setxattr(path, attr, value, follow_symlinks=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)

    def _file(self, sfd: int, dfd: int, name: str) -> None:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dfd)
            try:
                if self.stats._clone_ok:
                    try:
                        fcntl.ioctl(dst, FICLONE, src)
                        self.stats.cloned += 1
                        return
                    except OSError as e:
                        if e.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                            raise
                        self.stats._clone_ok = False
                _copy_data(src, dst)
                self.stats.copied += 1
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def close(self) -> None:
        for fd, _ in self.links.values():
            os.close(fd)


def _copy_data(src: int, dst: int) -> None:
    try:
        while os.copy_file_range(src, dst, 1 << 30):
            pass
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    os.lseek(dst, 0, os.SEEK_SET)
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]


def _is_opaque(fd: int) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(fd, attr) == b"y":
                return True
        except OSError:
            continue
    return False


def _xattrs(target: str | int) -> dict[str, bytes]:
    kw = {} if isinstance(target, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(target, **kw)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(_OVERLAY_PREFIXES):
            continue
        try:
            out[name] = os.getxattr(target, name, **kw)
        except OSError:
            pass
    return out


def _chown(target: str | int, st: os.stat_result, dfd: int | None = None) -> None:
    try:
        if isinstance(target, int):
            os.chown(target, st.st_uid, st.st_gid)
        else:
            os.chown(target, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
    except PermissionError:
        pass  # not root: the store recorded the owner in an xattr, copied with the others


def _copy_meta(sfd: int, dfd: int, st: os.stat_result) -> None:
    _chown(dfd, st)
    os.chmod(dfd, stat.S_IMODE(st.st_mode))
    want = _xattrs(sfd)
    have = _xattrs(dfd)
    for attr in have.keys() - want.keys():
        os.removexattr(dfd, attr)
    for attr, value in want.items():
        if have.get(attr) != value:
            os.setxattr(dfd, attr, value)
    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
