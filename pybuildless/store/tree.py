"""The on-disk form of one stored layer, and its fingerprint.

A layer is unpacked alone into an empty directory with its ``.wh.*`` entries
kept as names (``extract_layer(whiteouts=False)``); ``to_overlay_form`` then
turns them into what overlayfs reads from a lower dir (kernel
Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories"):

* ``.wh.NAME``        -> a character device 0/0 named NAME;
* ``.wh..wh..opq``    -> the xattr ``<ns>.overlay.opaque=y`` on its directory,
  ``trusted`` as real root, ``user`` otherwise (mounted with ``userxattr``);
* ``.wh..wh.*`` (aufs metadata) -> dropped.

overlayfs filters whiteouts only out of directories it merges from several
layers: in a directory that only one layer of the stack has, a whiteout shows
in listings as a name that cannot be opened. So whiteouts inside an opaque
directory are dropped (they hide nothing more), and the others are listed
(``OverlayForm.paths``) for whoever stacks layers to check that each one's
directory exists below it.

A whiteout of a name this same layer carries only hides lower content (OCI
image-spec layer.md): for a directory that is an opaque directory, for
anything else the entry itself already hides the lower one.

Two fingerprints detect on-disk damage, each combining inode, mode, owner,
size, ctime and link count of what it covers (ctime cannot be set by a user,
so any change to an inode shows, and a name added, removed or renamed shows
as its directory's ctime and link count):

* ``fingerprint`` covers every entry (one lstat each; 15-50 ms for 7,000
  entries on a busy 2-core machine): it also catches a truncated or rewritten
  file. Taken at unpack time and by ``LayerStore.verify``.
* ``dirs_fingerprint`` covers the directories only, from their recorded list
  (no directory is read: one lstat per directory, ~2 ms for Debian's ~700):
  a deleted, added or renamed entry anywhere in the tree. Checked at every use.

Neither is a content hash: the diff_id was verified while unpacking.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from pybuildless.fs.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX

# names the fingerprint scheme: a stored value under another scheme never matches
FINGERPRINT_SCHEME = "lstat-ino-mode-owner-size-ctime-nlink/1"
_MASK = (1 << 64) - 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def opaque_xattr() -> str:
    """The opaque-directory xattr this process can write and its overlays will read."""
    from pybuildless.sandbox.overlay_mount import in_user_namespace  # sandbox: only a uid-map read
    from pybuildless.sandbox.userns import in_reexecuted_namespace  # an identity map looks like none

    if os.geteuid() != 0 or in_user_namespace() or in_reexecuted_namespace():
        return "user.overlay.opaque"
    return "trusted.overlay.opaque"


@dataclass(frozen=True)
class TreeSummary:
    """An unpacked tree's entry count, size on disk and fingerprints."""

    entries: int  # below the top directory, which is not counted
    disk_bytes: int  # allocated blocks, each inode once
    fingerprint: str  # every entry
    dirs: tuple[str, ...]  # directories below the top, relative
    dirs_fingerprint: str  # the top and every directory
    implicit_dirs: tuple[str, ...] = ()  # directories with an mtime at or after ``made_after_ns``


@dataclass(frozen=True)
class OverlayForm:
    """How a layer's whiteouts and opaque dirs were turned into overlay form."""

    whiteouts: int
    opaque_dirs: int
    char_whiteouts: bool  # False: mknod 0/0 was refused, whiteouts stay as .wh.NAME files
    paths: tuple[str, ...]  # what the layer's whiteouts hide, relative


def to_overlay_form(top: str, opaque_attr: str) -> OverlayForm:
    """Turn the ``.wh.*`` files of a freshly unpacked layer into overlay whiteouts, in place.

    Whiteouts inside an opaque directory are dropped: the directory already hides
    everything below it, and overlayfs lists a whiteout of a directory it does not
    merge as an entry that cannot be opened. Directory mtimes are put back afterwards:
    they are part of the image.
    """
    counts = [0, 0]
    char_ok = [True]
    whiteouts: list[str] = []

    def visit(dfd: int, prefix: str) -> None:
        names = os.listdir(dfd)
        present = set(names)
        markers = sorted((n for n in names if n.startswith(WHITEOUT_PREFIX)), key=lambda n: n != OPAQUE_MARKER)
        if markers:
            before = os.stat(dfd)
            restore_mode = None
            if os.geteuid() != 0 and not before.st_mode & 0o200:
                restore_mode = stat.S_IMODE(before.st_mode)
                os.chmod(dfd, restore_mode | 0o700)
            for name in markers:
                _convert(dfd, prefix, name, present, opaque_attr, counts, char_ok, whiteouts)
            if restore_mode is not None:
                os.chmod(dfd, restore_mode)
            os.utime(dfd, ns=(before.st_atime_ns, before.st_mtime_ns))
        for name in names:
            if name in markers:
                continue
            st = os.lstat(name, dir_fd=dfd)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    visit(sub, prefix + name + "/")
                finally:
                    os.close(sub)

    fd = os.open(top, _DIR_FLAGS)
    try:
        visit(fd, "")
    finally:
        os.close(fd)
    return OverlayForm(counts[0], counts[1], char_ok[0], tuple(whiteouts))


def _is_opaque(fd: int, attr: str) -> bool:
    try:
        return os.getxattr(fd, attr) == b"y"
    except OSError:
        return False


def _convert(dfd: int, prefix: str, name: str, present: set[str], opaque_attr: str, counts: list[int],
             char_ok: list[bool], whiteouts: list[str]) -> None:
    if name == OPAQUE_MARKER:
        os.unlink(name, dir_fd=dfd)
        os.setxattr(dfd, opaque_attr, b"y")
        counts[1] += 1
        return
    victim = name[len(WHITEOUT_PREFIX):]
    if name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) or victim in ("", ".", ".."):
        os.unlink(name, dir_fd=dfd)  # aufs metadata, or a name that hides nothing
        return
    counts[0] += 1
    if _is_opaque(dfd, opaque_attr):
        os.unlink(name, dir_fd=dfd)  # the directory hides every lower entry already
        return
    if victim in present:
        os.unlink(name, dir_fd=dfd)
        if stat.S_ISDIR(os.lstat(victim, dir_fd=dfd).st_mode):
            sub = os.open(victim, _DIR_FLAGS, dir_fd=dfd)
            try:
                before = os.stat(sub)
                os.setxattr(sub, opaque_attr, b"y")
                os.utime(sub, ns=(before.st_atime_ns, before.st_mtime_ns))
            finally:
                os.close(sub)
            counts[1] += 1
        return
    whiteouts.append(prefix + victim)
    if not char_ok[0]:
        return  # keep the OCI form; only a copy can apply this entry
    try:
        os.mknod(victim, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
    except PermissionError:
        char_ok[0] = False
        return
    os.unlink(name, dir_fd=dfd)


def _combine(st: os.stat_result) -> int:
    # tuple hashes of ints do not depend on PYTHONHASHSEED; a renamed, added or removed
    # name shows as its directory's ctime and link count
    return hash((st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ctime_ns, st.st_nlink)) & _MASK


def _seal(count: int, total: int) -> str:
    return f"{count}:{total & _MASK:016x}"


def summarize(top: str, made_after_ns: int | None = None) -> TreeSummary:
    """Entry count, disk usage and both fingerprints of the tree below ``top`` (one lstat per entry).

    ``made_after_ns``: list the directories whose mtime is that late. Right after an unpack
    these are the parents the tar did not carry: the extractor made them and left their
    creation time, where a tar entry's time was set from its header.
    """
    total = dirs_total = _combine(os.lstat(top))
    count = 0
    disk = 0
    seen: set[int] = set()
    dirs: list[str] = []
    implicit: list[str] = []
    stack = [(top, "")]
    while stack:
        d, prefix = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                count += 1
                value = _combine(st)
                total += value
                if st.st_nlink == 1 or st.st_ino not in seen:
                    if st.st_nlink > 1:
                        seen.add(st.st_ino)
                    disk += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    rel = prefix + e.name
                    dirs.append(rel)
                    dirs_total += value
                    if made_after_ns is not None and st.st_mtime_ns >= made_after_ns:
                        implicit.append(rel)
                    stack.append((e.path, rel + "/"))
    return TreeSummary(count, disk, _seal(count, total), tuple(dirs), _seal(len(dirs), dirs_total),
                       tuple(implicit))


def dirs_fingerprint(top: str, dirs: tuple[str, ...] | list[str]) -> str | None:
    """The directories' fingerprint now (no directory listing: one lstat per recorded
    directory); None when one of them is gone or is no longer a directory."""
    total = _combine(os.lstat(top))
    for rel in dirs:
        try:
            st = os.lstat(os.path.join(top, rel))
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        total += _combine(st)
    return _seal(len(dirs), total)
