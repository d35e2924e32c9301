"""What a stack of overlay diff dirs changed on the lower dirs below it, read from the diff dirs alone.

A stage root mounted as an overlay (``builder.overlayroot``) is a stack of directories: the
stored layers, the diffs of earlier steps (each an upper dir that became a lower dir) and the
live upper dir. What changed between a snapshot that saw the stack up to some lower dir and
now is entirely in the dirs above it: a path no diff dir names shows what it showed before.
``stack_changes`` compares, for each path the diff dirs name, what the whole stack shows with
what the dirs below them showed, by looking each name up layer by layer as overlayfs does
(topmost first; a whiteout, a non-directory or an opaque directory hides what is below it),
so the lower dirs are only looked at where a diff dir names something. Time is proportional
to the diffs, not to the root.

The result is what ``fs.snapshot.Snapshotter`` reports for the same two trees:

* a name hidden by a whiteout that was there before is deleted (one whiteout for the top of
  a removed tree); a whiteout of a name that was not there is nothing;
* a directory whose lookup stops in the diff dirs (made again: opaque, or above a whiteout
  or a non-directory) over a directory that was there is opaque, and everything below it is
  added; over a non-directory it is modified, everything below added;
* a directory that merges with the one below counts as modified only when its mode, owner,
  mtime or image xattrs differ (a parent copied up because something below it changed is
  not: BuildKit's overlay differ does the same, ``sameDirent`` in
  moby/buildkit util/overlay/overlay_linux.go@73ed6825c4b7569379ef89df0aedcdbe64473d31,
  and it too skips a whiteout of a name the base lacks, ``checkDelete``);
* a non-directory a diff dir holds was written: modified if something was there, else added.

BuildKit reads one upper dir against a mounted view of the lowers; here several diff dirs
(a step's directories made before it ran, the RUN's own upper dir, and the steps since the
last snapshot under ``--single-snapshot``) are read at once, against the lower dirs as they are.
Redirects and metacopy files are not followed: the stage roots are mounted without them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Sequence

from pybuildless.fs.changes import Changes, read_xattrs
from pybuildless.fs.ignore import IgnoreList

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    """True if the directory ``path`` of an overlay layer hides everything below it in lower layers."""
    for attr in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def snapshot_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """The xattrs a snapshot compares and a layer carries (``fs.changes.read_xattrs``), without the
    overlay's own (``user.overlay.*`` when the overlay was mounted with ``userxattr``)."""
    return tuple(x for x in read_xattrs(path) if not x[0].startswith(_OVERLAY_XATTR_PREFIXES))


def dir_meta(st: os.stat_result, path: str) -> tuple:
    """What a snapshot compares of a directory that is still the same directory."""
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, snapshot_xattrs(path)


def _lookup(dirs: Sequence[str], name: str) -> tuple[os.stat_result | None, str, list[str], bool]:
    """What an overlay of ``dirs`` (topmost first) shows at ``name``: (the stat of its topmost
    entry, that entry's path, the directories merged into it topmost first, whether the lookup
    stopped before the last of ``dirs``: a whiteout, a non-directory or an opaque directory).
    The stat is None when nothing shows (absent, or hidden by a whiteout)."""
    top: os.stat_result | None = None
    top_path = ""
    merged: list[str] = []
    for d in dirs:
        path = f"{d}/{name}"
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if is_whiteout(st):
            return top, top_path, merged, True
        if not stat.S_ISDIR(st.st_mode):
            if top is None:
                return st, path, merged, True
            return top, top_path, merged, True  # a non-directory below a directory is hidden
        if top is None:
            top, top_path = st, path
        merged.append(path)
        if is_opaque(path):
            return top, top_path, merged, True
    return top, top_path, merged, False


@dataclass(frozen=True)
class Shown:
    """What a stack of overlay dirs shows at one path: its topmost entry (``st`` of ``path``) and,
    for a directory, the directories merged into it, topmost first."""

    st: os.stat_result
    path: str
    merged: tuple[str, ...]


def shown_at(dirs: Sequence[str], rel: str) -> Shown | None:
    """What an overlay of ``dirs`` (topmost first) shows at ``rel``; None when nothing."""
    chain = list(dirs)
    parts = rel.split("/")
    for i, name in enumerate(parts):
        st, path, merged, _ = _lookup(chain, name)
        if st is None:
            return None
        if i == len(parts) - 1:
            return Shown(st, path, tuple(merged))
        if not stat.S_ISDIR(st.st_mode):
            return None
        chain = merged
    return None


@dataclass(frozen=True)
class Seen:
    """What a snapshot saw at one path, kept as values (the entry's file may change after): the
    topmost entry's stat, a directory's compared metadata (``dir_meta``) and the identities
    (device, inode) of the directories merged into it."""

    st: os.stat_result
    meta: tuple | None
    merged: frozenset[tuple[int, int]]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def seen_at(dirs: Sequence[str], rel: str) -> Seen | None:
    """``shown_at`` kept as a ``Seen``."""
    shown = shown_at(dirs, rel)
    if shown is None:
        return None
    if not stat.S_ISDIR(shown.st.st_mode):
        return Seen(shown.st, None, frozenset())
    merged = frozenset((st.st_dev, st.st_ino) for st in map(os.lstat, shown.merged))
    return Seen(shown.st, dir_meta(shown.st, shown.path), merged)


def compared(rel: str, old: Seen | None, new: Seen | None) -> Changes:
    """The change at ``rel`` alone from ``old`` to ``new`` (as ``stack_changes`` tells it)."""
    if old is None and new is None:
        return Changes()
    if new is None:
        return Changes(deleted=(rel,))
    if old is None:
        return Changes(added=(rel,))
    if not (old.is_dir and new.is_dir):
        same = old.is_dir == new.is_dir and _entry_key(old.st) == _entry_key(new.st)
        return Changes() if same else Changes(modified=(rel,))
    if (old.st.st_dev, old.st.st_ino) not in new.merged:  # made again since
        return Changes(modified=(rel,), opaque=(rel,))
    return Changes() if old.meta == new.meta else Changes(modified=(rel,))


def _entry_key(st: os.stat_result) -> tuple:
    """A non-directory entry as a snapshot tells it from another or from itself rewritten."""
    return st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _names(dirs: Sequence[str]) -> set[str]:
    names: set[str] = set()
    for d in dirs:
        names.update(os.listdir(d))
    return names


def stack_changes(lowers: Sequence[str], diffs: Sequence[str], ignore: IgnoreList | None = None) -> Changes:
    """The changes ``diffs`` (overlay upper dirs, lowest first) make to what ``lowers`` (overlay
    lower dirs, lowest first) show together; paths ``ignore`` names (and below) are left out."""
    added: list[str] = []
    modified: list[str] = []
    deleted: list[str] = []
    opaque: list[str] = []
    # (path prefix, the diff dirs merged into this directory, the lower dirs merged into it as it was,
    # topmost first); lower dirs None: the directory is new, everything below it is added
    stack: list[tuple[str, list[str], list[str] | None]] = [
        ("", [os.fspath(d) for d in reversed(diffs)], [os.fspath(d) for d in reversed(lowers)])]
    while stack:
        prefix, upper, lower = stack.pop()
        for name in _names(upper):
            rel = prefix + name
            if ignore and ignore.is_ignored("/" + rel):
                continue
            new, new_path, new_dirs, stopped = _lookup(upper, name)
            if lower is None:
                if new is not None:
                    added.append(rel)
                    if stat.S_ISDIR(new.st_mode):
                        stack.append((rel + "/", new_dirs, None))
                continue
            old, old_path, old_dirs, _ = _lookup(lower, name)
            if new is None:  # hidden by a whiteout (a name the diff dirs never had a file for)
                if old is not None:
                    deleted.append(rel)
                continue
            if not stat.S_ISDIR(new.st_mode):
                (modified if old is not None else added).append(rel)
            elif old is None:
                added.append(rel)
                stack.append((rel + "/", new_dirs, None))
            elif not stat.S_ISDIR(old.st_mode):
                modified.append(rel)
                stack.append((rel + "/", new_dirs, None))
            elif stopped:  # made again above the one that was there
                opaque.append(rel)
                modified.append(rel)
                stack.append((rel + "/", new_dirs, None))
            else:
                if dir_meta(new, new_path) != dir_meta(old, old_path):
                    modified.append(rel)
                stack.append((rel + "/", new_dirs, old_dirs))
    return Changes(tuple(sorted(added)), tuple(sorted(modified)), tuple(sorted(deleted)), tuple(sorted(opaque)))
