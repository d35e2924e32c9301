"""Overlay snapshots: a RUN writes into an overlayfs upper dir; its diff is read from there.

The sandbox mounts ``overlay`` over the stage root (lowerdir = the root,
upperdir = a fresh directory), so everything the step changes lands in the
upper dir and nothing else is touched. Reading the diff is then a walk of the
upper dir alone, proportional to the change, not to the root:

* a whiteout (a character device 0/0) is a deletion (an OCI ``.wh.NAME``);
* a directory marked ``overlay.opaque=y`` (``trusted.`` as real root, ``user.``
  with the ``userxattr`` mount option in a user namespace) was removed and
  made again: an opaque marker, and everything below it is new;
* everything else was added or modified.

``apply_upper`` then moves the upper dir's entries onto the root (rename(2),
same filesystem), so the root stays the single source of truth for later steps
and for ``COPY --from``. Copy-up xattrs (``*.overlay.origin``, ``impure``) are
dropped on the way: they describe the mount, not the image. A root that is
itself an overlay of stored layers does not take the entries one by one (a copy
across the two mounts): it keeps the upper dir as one more lower dir
(``builder.overlayroot.stack_upper``).

One semantic difference with a RUN writing straight into the root: overlayfs
breaks hard links on copy-up, so writing through one name of a file hard-linked
in a lower layer changes that name only — which is what Docker and BuildKit
builds do too.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from pybuildless.fs import secure
from pybuildless.fs.changes import Changes
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.overlaydiff import OPAQUE_XATTRS, dir_meta, is_opaque, is_whiteout

__all__ = ["OPAQUE_XATTRS", "apply_upper", "combined", "is_opaque", "is_whiteout", "overlay_changes",
           "snapshot_tops", "without_ignored"]

log = logging.getLogger(__name__)

_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_SKIP_XATTRS = ("security.selinux",)  # the host's label, never part of the image
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _xattr_path(dirfd: int, name: str) -> str:
    return f"/proc/self/fd/{dirfd}/{name}"


def _nofollow(target: str | int) -> dict:
    # an fd is the file itself; for a path, the last component is never followed
    return {} if isinstance(target, int) else {"follow_symlinks": False}


def _image_xattrs(target: str | int) -> dict[str, bytes]:
    """The xattrs that belong to the file (not to the overlay mount, not host labels)."""
    try:
        names = os.listxattr(target, **_nofollow(target))
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(_OVERLAY_XATTR_PREFIXES) or name in _SKIP_XATTRS:
            continue
        try:
            out[name] = os.getxattr(target, name, **_nofollow(target))
        except OSError:
            pass
    return out


def overlay_changes(upper: Path | str, *, lower: Path | str | None = None,
                    ignore: IgnoreList | None = None) -> Changes:
    """The changes an overlay upper dir holds, in time proportional to its size.

    ``lower`` (the root the overlay was mounted over, *before* ``apply_upper``)
    tells added from modified, drops whiteouts of names the lower never had and
    drops directories that were only copied up because something below them
    changed (same mode, owner, mtime and image xattrs as below). ``fs.overlaydiff``
    reads several upper dirs stacked on the lower dirs themselves. Without it every
    entry outside an opaque directory counts as modified.
    """
    upper = os.fspath(upper)
    lower_s = os.fspath(lower) if lower is not None else None
    ignore = ignore or IgnoreList.empty()
    added: list[str] = []
    modified: list[str] = []
    deleted: list[str] = []
    opaque: list[str] = []
    # (directory on disk, its rel path, everything below is new)
    stack: list[tuple[str, str, bool]] = [(upper, "", False)]
    while stack:
        d, prefix, new_below = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                rel = prefix + e.name
                if ignore and ignore.is_ignored("/" + rel):
                    continue
                st = e.stat(follow_symlinks=False)
                lst = None
                if lower_s is not None and not new_below:
                    try:
                        lst = os.lstat(os.path.join(lower_s, rel))
                    except OSError:  # missing, or a parent is not a directory there
                        lst = None
                if is_whiteout(st):
                    if not new_below and (lower_s is None or lst is not None):
                        deleted.append(rel)
                    continue
                in_lower = lower_s is None or lst is not None
                if stat.S_ISDIR(st.st_mode):
                    if not new_below and in_lower and is_opaque(e.path):
                        if lower_s is None or stat.S_ISDIR(lst.st_mode):
                            opaque.append(rel)
                            modified.append(rel)
                        else:
                            modified.append(rel)  # a non-directory became a directory
                        stack.append((e.path, rel + "/", True))
                        continue
                    if new_below or not in_lower:
                        added.append(rel)
                        stack.append((e.path, rel + "/", True))
                        continue
                    # the snapshot's notion of a changed directory (fs.overlaydiff.dir_meta), so the
                    # changes are the same whether they are read from here or taken by a snapshot
                    if lst is None or not stat.S_ISDIR(lst.st_mode) or \
                            dir_meta(st, e.path) != dir_meta(lst, os.path.join(lower_s, rel)):
                        modified.append(rel)
                    stack.append((e.path, rel + "/", False))
                    continue
                (added if new_below or not in_lower else modified).append(rel)
    return Changes(tuple(sorted(added)), tuple(sorted(modified)), tuple(sorted(deleted)), tuple(sorted(opaque)))


def without_ignored(changes: Changes, ignore: IgnoreList | None) -> Changes:
    """``changes`` minus the paths the build never snapshots."""
    if not ignore:
        return changes

    def keep(paths: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(p for p in paths if not ignore.is_ignored("/" + p))

    return Changes(keep(changes.added), keep(changes.modified), keep(changes.deleted), keep(changes.opaque))


def combined(first: Changes, second: Changes) -> Changes:
    """Both sets of changes in one (a path reported as added by either stays added)."""
    added = set(first.added) | set(second.added)
    modified = (set(first.modified) | set(second.modified)) - added
    return Changes(tuple(sorted(added)), tuple(sorted(modified)),
                   tuple(sorted(set(first.deleted) | set(second.deleted))),
                   tuple(sorted(set(first.opaque) | set(second.opaque))))


def snapshot_tops(changes: Changes) -> list[str]:
    """The paths to hand to ``Snapshotter.take_paths`` so it adopts an applied upper dir.

    Directories that only carry changes below them are left out: take_paths
    checks every top's parents anyway, and walking them would cost their
    whole subtree. Tops below an added or opaque directory are covered by its walk.
    """
    every = set(changes.paths) | set(changes.deleted) | set(changes.opaque)
    has_below: set[str] = set()
    for rel in every:
        parent = rel.rpartition("/")[0]
        while parent and parent not in has_below:
            has_below.add(parent)
            parent = parent.rpartition("/")[0]
    whole = set(changes.added) | set(changes.opaque)  # subtrees walked entirely
    tops = []
    for rel in sorted(every):
        if rel in has_below and rel not in whole:
            continue
        parent = rel.rpartition("/")[0]
        covered = False
        while parent:
            if parent in whole:
                covered = True
                break
            parent = parent.rpartition("/")[0]
        if not covered:
            tops.append(rel)
    return tops


# -- applying -------------------------------------------------------------------------


def apply_upper(upper: Path | str, root: Path | str) -> int:
    """Move the upper dir's changes onto ``root``; returns the number of entries applied.

    Entries are renamed into place (copied when the two are on different
    filesystems); the upper dir is left with directories only. Nothing is ever
    followed through a symlink in the root.
    """
    ufd = os.open(upper, _DIR_FLAGS)
    try:
        rfd = os.open(root, _DIR_FLAGS)
        try:
            applier = _Applier(rfd)
            applier.apply_dir(ufd, rfd, "")
            return applier.count
        finally:
            os.close(rfd)
    finally:
        os.close(ufd)


class _Applier:
    def __init__(self, rootfd: int) -> None:
        self.rootfd = rootfd
        self.count = 0
        self.links: dict[tuple[int, int], str] = {}  # copied inodes (cross-device only): first rel path

    def apply_dir(self, ufd: int, rfd: int, prefix: str) -> None:
        for e in list(os.scandir(ufd)):
            name = e.name
            st = e.stat(follow_symlinks=False)
            self.count += 1
            try:
                old = os.lstat(name, dir_fd=rfd)
            except FileNotFoundError:
                old = None
            if is_whiteout(st):
                if old is not None:
                    secure.remove_in_dir(rfd, name)
                continue
            if stat.S_ISDIR(st.st_mode):
                if old is None and self._move_new_tree(ufd, rfd, name):
                    continue
                self._apply_subdir(ufd, rfd, prefix, name, st, old)
            else:
                self._move(ufd, rfd, prefix, name, st, old)

    def _move_new_tree(self, ufd: int, rfd: int, name: str) -> bool:
        """A directory the root does not have: one rename for the whole tree (nothing below it
        can be a whiteout, there was no lower dir to hide), then the overlay's xattrs dropped."""
        try:
            os.rename(name, name, src_dir_fd=ufd, dst_dir_fd=rfd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return False  # entry by entry, copying
        dfd = os.open(name, _DIR_FLAGS, dir_fd=rfd)
        try:
            _drop_overlay_xattrs(dfd)
            self.count += _drop_overlay_xattrs_below(dfd)
        finally:
            os.close(dfd)
        return True

    def _apply_subdir(self, ufd: int, rfd: int, prefix: str, name: str, st: os.stat_result,
                      old: os.stat_result | None) -> None:
        usub = os.open(name, _DIR_FLAGS, dir_fd=ufd)
        try:
            if old is None or not stat.S_ISDIR(old.st_mode) or is_opaque(_xattr_path(ufd, name)):
                # A fresh directory, made while an fd still holds the old one, so the two never
                # share an inode number (snapshots tell "recreated" by inode). No rename: on a
                # stage root that is itself an overlay, renaming a directory into a merged one
                # needs the trusted.overlay.opaque xattr, which a user namespace cannot set (EXDEV).
                pin = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=rfd) if old is not None else -1
                try:
                    if old is not None:
                        secure.remove_in_dir(rfd, name)
                    os.mkdir(name, 0o700, dir_fd=rfd)
                finally:
                    if pin >= 0:
                        os.close(pin)
            rsub = os.open(name, _DIR_FLAGS, dir_fd=rfd)
            try:
                self.apply_dir(usub, rsub, f"{prefix}{name}/")
                _copy_meta(usub, rsub, st)  # last: adding the children moved the mtime
            finally:
                os.close(rsub)
        finally:
            os.close(usub)

    def _move(self, ufd: int, rfd: int, prefix: str, name: str, st: os.stat_result,
              old: os.stat_result | None) -> None:
        if old is not None and stat.S_ISDIR(old.st_mode):
            secure.remove_in_dir(rfd, name)
        try:
            os.rename(name, name, src_dir_fd=ufd, dst_dir_fd=rfd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy(ufd, rfd, prefix, name, st)
            return
        if not stat.S_ISLNK(st.st_mode):
            _drop_overlay_xattrs(_xattr_path(rfd, name))

    def _copy(self, ufd: int, rfd: int, prefix: str, name: str, st: os.stat_result) -> None:
        """Cross-device fallback: recreate the entry (hard links kept by inode)."""
        rel = prefix + name
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            first = self.links.get(key)
            if first is not None:
                _unlink_if_present(rfd, name)
                os.link(first, name, src_dir_fd=self.rootfd, dst_dir_fd=rfd, follow_symlinks=False)
                return
            self.links[key] = rel
        _unlink_if_present(rfd, name)
        if stat.S_ISREG(st.st_mode):
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=ufd)
            try:
                dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=rfd)
                try:
                    while chunk := os.read(src, 1 << 20):
                        os.write(dst, chunk)
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=ufd), name, dir_fd=rfd)
        elif stat.S_ISSOCK(st.st_mode):
            return  # sockets are never part of a layer
        else:
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=rfd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=rfd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=rfd)
            for attr, value in _image_xattrs(_xattr_path(ufd, name)).items():
                os.setxattr(_xattr_path(rfd, name), attr, value, follow_symlinks=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=rfd, follow_symlinks=False)


def _unlink_if_present(dirfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dirfd)
    except FileNotFoundError:
        pass


def _drop_overlay_xattrs(target: str | int) -> None:
    try:
        names = os.listxattr(target, **_nofollow(target))
    except OSError:
        return
    for name in names:
        if name.startswith(_OVERLAY_XATTR_PREFIXES):
            try:
                os.removexattr(target, name, **_nofollow(target))
            except OSError as exc:
                log.debug("cannot drop %s from %s: %s", name, target, exc.strerror)


def _drop_overlay_xattrs_below(dirfd: int) -> int:
    """Drop the overlay's xattrs from everything below ``dirfd`` (no symlink followed); the count."""
    count = 0
    for e in list(os.scandir(dirfd)):
        count += 1
        if e.is_symlink():
            continue
        _drop_overlay_xattrs(_xattr_path(dirfd, e.name))
        if e.is_dir(follow_symlinks=False):
            sub = os.open(e.name, _DIR_FLAGS, dir_fd=dirfd)
            try:
                count += _drop_overlay_xattrs_below(sub)
            finally:
                os.close(sub)
    return count


def _copy_meta(ufd: int, rfd: int, st: os.stat_result) -> None:
    """Owner, mode, xattrs and times of an upper directory onto its root counterpart."""
    os.chown(rfd, st.st_uid, st.st_gid)
    os.chmod(rfd, stat.S_IMODE(st.st_mode))  # after chown, which may clear set-id bits
    want = _image_xattrs(ufd)
    have = _image_xattrs(rfd)
    for attr in have.keys() - want.keys():
        os.removexattr(rfd, attr)
    for attr, value in want.items():
        if have.get(attr) != value:
            os.setxattr(rfd, attr, value)
    _drop_overlay_xattrs(rfd)
    os.utime(rfd, ns=(st.st_atime_ns, st.st_mtime_ns))
