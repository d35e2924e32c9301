"""Filesystem snapshots: what a build step added, changed and deleted.

The state is a dict ``relpath -> stat key`` (no leading slash; '' is never
stored). ctime is part of the key, so a content change whose mtime was put
back is still seen; contents are hashed only in "full" mode, and only for
files whose ctime moved while everything else stayed equal. The state after a
step is the baseline of the next one, so deletions are whiteouts exactly for
paths that exist in lower layers.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from pathlib import Path
from typing import Iterable

from pybuildless.fs import secure
from pybuildless.fs.changes import (
    CTIME, DEV, GID, INO, MODE, MTIME, NLINK, RDEV, SIZE, UID, Changes, ancestors, hash_file,
    read_xattrs, stat_key,
)
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.watch import DirWatcher, Incomplete

__all__ = ["Changes", "Snapshotter"]  # Changes lives in fs.changes; importable from here too

log = logging.getLogger(__name__)

class Snapshotter:
    """Tracks a root's state across build steps.

    ``mode``: "stat" (default; ctime-based, no content reads) or "full"
    (content hashes, like kaniko's default: a file touched without any real
    change is not reported). ``watch``: use inotify so that ``take()`` only
    looks at paths the kernel reported (falls back to a full walk whenever the
    record may be incomplete; see ``pybuildless.fs.watch``).
    """

    def __init__(self, root: Path | str, ignore: IgnoreList | None = None, *, mode: str = "stat",
                 watch: bool = True) -> None:
        if mode not in ("stat", "full"):
            raise ValueError(f"unknown snapshot mode {mode!r}")
        self.root = os.path.realpath(root)
        self.ignore = ignore or IgnoreList.empty()
        self.mode = mode
        self.state: dict[str, tuple] = {}
        self.xattrs: dict[str, tuple] = {}
        self.hashes: dict[str, str] = {}
        self.watch = watch
        self._watcher: DirWatcher | None = None

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def __del__(self) -> None:
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.close()

    def __enter__(self) -> "Snapshotter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rewatch(self) -> None:
        self.close()
        if not self.watch:
            return
        try:
            w = DirWatcher(self.root)
        except OSError as e:
            log.debug("no inotify (%s): snapshots walk the whole root", e)
            return
        w.add("")
        for rel, key in self.state.items():
            if stat.S_ISDIR(key[MODE]):
                w.add(rel)
        if w.broken:
            w.close()
            return
        self._watcher = w

    # -- walking ------------------------------------------------------------
    def _walk(self, top: str) -> dict[str, tuple]:
        """Stat keys of everything under ``top`` (rel; '' = whole root), not including top."""
        out: dict[str, tuple] = {}
        ignore = self.ignore.entries if self.ignore else None
        base = self.root if not top else os.path.join(self.root, top)
        stack = [(base, top + "/" if top else "")]
        while stack:
            d, prefix = stack.pop()
            try:
                it = os.scandir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for e in it:
                    rel = prefix + e.name
                    if ignore and ("/" + rel) in ignore:
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                st.st_ino, st.st_dev, st.st_nlink, st.st_rdev)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((e.path, rel + "/"))
        return out

    def _stat(self, rel: str) -> tuple | None:
        """lstat of root/rel; only valid once every parent of rel is known to be a real directory."""
        try:
            return stat_key(os.lstat(os.path.join(self.root, rel)))
        except OSError:  # gone, or a parent is no longer a directory (ENOTDIR, ELOOP...)
            return None

    def _stat_checked(self, rel: str, keys: dict[str, tuple | None], fresh: set[str]) -> tuple | None:
        """lstat of rel, or None if a parent is not a directory now (never looks through a symlink).

        Parents in ``fresh`` may have changed and are checked (recursively); the
        others are unchanged since the last snapshot, so the state is the truth.
        """
        if rel in keys:
            return keys[rel]
        parent = posixpath.dirname(rel)
        if parent:
            pkey = self._stat_checked(parent, keys, fresh) if parent in fresh else self.state.get(parent)
            if pkey is None or not stat.S_ISDIR(pkey[MODE]):
                keys[rel] = None
                return None
        keys[rel] = self._stat(rel)
        return keys[rel]

    # -- public API ---------------------------------------------------------
    def baseline(self) -> None:
        """Record the current state as the lower layers' content (no changes reported)."""
        self.state = self._walk("")
        self.xattrs = {}
        self.hashes = {}
        for rel, key in self.state.items():
            self._record_extras(rel, key)
        self._rewatch()

    def take(self) -> Changes:
        """Report the changes since the last snapshot and adopt the new state."""
        if self._watcher is not None:
            try:
                return self._take_reported(*self._watcher.drain())
            except Incomplete:
                log.debug("inotify record incomplete: walking the whole root")
        new = self._walk("")
        changes = self._adopt(self.state, new, scope=None)
        if self.watch:
            self._rewatch()
        return changes

    def _take_reported(self, dirty: set[str], created_dirs: set[str]) -> Changes:
        """Look only at the paths inotify named (and whole subtrees of replaced directories)."""
        state = self.state
        queue = {rel for rel in dirty if not self.ignore.is_ignored("/" + rel)}
        keys: dict[str, tuple | None] = {}
        for rel in queue:
            self._stat_checked(rel, keys, queue)
        # other names of a hardlinked inode get no event of their own
        wanted = {(k[DEV], k[INO]) for rel in queue for k in (keys[rel], state.get(rel))
                  if k is not None and k[NLINK] > 1 and not stat.S_ISDIR(k[MODE])}
        if wanted:
            for rel, key in state.items():
                if (key[DEV], key[INO]) in wanted and rel not in keys:
                    queue.add(rel)
            for rel in list(queue):
                self._stat_checked(rel, keys, queue)
        old_sub: dict[str, tuple] = {}
        new_sub: dict[str, tuple] = {}
        replaced: set[str] = set()  # directories whose whole subtree must be compared
        for rel in queue:
            old, key = state.get(rel), keys[rel]
            if old is not None:
                old_sub[rel] = old
            if key is not None:
                new_sub[rel] = key
            old_dir = old is not None and stat.S_ISDIR(old[MODE])
            new_dir = key is not None and stat.S_ISDIR(key[MODE])
            same_dir = old_dir and new_dir and (old[INO], old[DEV]) == (key[INO], key[DEV])
            if (old_dir or new_dir) and (not same_dir or rel in created_dirs):
                replaced.add(rel)  # (created again, perhaps with its old inode number)
        tops = {r for r in replaced if not any(a in replaced for a in ancestors(r))}
        prefixes = tuple(t + "/" for t in tops)
        if tops:
            for rel, key in state.items():
                if rel.startswith(prefixes):
                    old_sub[rel] = key
            for top in tops:
                if top in new_sub and stat.S_ISDIR(new_sub[top][MODE]):
                    new_sub.update(self._walk(top))
        changes = self._adopt(old_sub, new_sub, scope=None)
        for rel, key in new_sub.items():
            if stat.S_ISDIR(key[MODE]) and (rel in replaced or rel in changes.added or rel.startswith(prefixes)):
                self._watcher.add(rel)
        return changes

    def take_paths(self, paths: Iterable[str]) -> Changes:
        """Only look at ``paths`` (and below, and their parent directories): for COPY/ADD.

        A path reached through a symlinked directory is looked at where it
        really is (resolved inside the root), never through the link.
        """
        old_sub: dict[str, tuple] = {}
        new_sub: dict[str, tuple] = {}
        tops: set[str] = set()
        for top in self._tops(paths, new_sub):
            tops.add(top)
            key = self._stat(top)
            if key is not None:
                new_sub[top] = key
                if stat.S_ISDIR(key[MODE]):
                    new_sub.update(self._walk(top))
        for anc in list(new_sub):
            if anc in self.state and anc not in tops:
                old_sub[anc] = self.state[anc]
        for top in tops:
            if top in self.state:
                old_sub[top] = self.state[top]
        old_dirs = tuple(t + "/" for t in tops if t in self.state and stat.S_ISDIR(self.state[t][MODE]))
        if old_dirs:  # one C-level prefix test per known path
            for rel, old in self.state.items():
                if rel.startswith(old_dirs):
                    old_sub[rel] = old
        return self._adopt(old_sub, new_sub, scope=None)

    def tops(self, paths: Iterable[str]) -> list[str]:
        """The paths ``take_paths(paths)`` looks at (each with everything below it and its parent
        directories): normalized, resolved inside the root, without those the ignore list names."""
        return self._tops(paths, {})

    def _tops(self, paths: Iterable[str], parents_seen: dict[str, tuple]) -> list[str]:
        """``tops``; the stat keys of their parents are added to ``parents_seen``."""
        out = []
        for top in sorted({posixpath.normpath(p).strip("/") for p in paths} - {"", "."}):
            parents = self._real_parents(top, parents_seen)
            if parents is None:
                resolved = self._resolve_in_root(top)
                parents = None if resolved is None else self._real_parents(resolved, parents_seen)
                if parents is None:
                    log.debug("hint path /%s does not exist below real directories; skipped", top)
                    continue
                top = resolved
            if not top or self.ignore.is_ignored("/" + top):
                continue  # nor its parents: one of them may be the ignored path
            parents_seen.update(parents)
            out.append(top)
        return out

    def _real_parents(self, top: str, known: dict[str, tuple]) -> dict[str, tuple] | None:
        """The stat keys of the parents of ``top`` (taken from ``known`` when there);
        None if one of them is not a real directory."""
        parts = top.split("/")
        keys = {}
        for i in range(1, len(parts)):
            anc = "/".join(parts[:i])
            key = known.get(anc) or self._stat(anc)
            if key is None or not stat.S_ISDIR(key[MODE]):
                return None
            keys[anc] = key
        return keys

    def _resolve_in_root(self, top: str) -> str | None:
        """Where ``top`` really is, following symlinks of its parents as if chrooted."""
        parent, _, base = top.rpartition("/")
        rootfd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = secure.walk_in_root(rootfd, parent)
        except OSError:
            return None
        finally:
            os.close(rootfd)
        try:
            real = secure.fd_path(fd)
        finally:
            os.close(fd)
        prefix = self.root.rstrip("/") + "/"
        if real == self.root:
            return base
        if not real.startswith(prefix):
            return None
        return f"{real[len(prefix):]}/{base}"

    # -- diffing ------------------------------------------------------------
    def _record_extras(self, rel: str, key: tuple) -> None:
        full = os.path.join(self.root, rel)
        xa = read_xattrs(full) if not stat.S_ISLNK(key[MODE]) else ()
        if xa:
            self.xattrs[rel] = xa
        else:
            self.xattrs.pop(rel, None)
        if self.mode == "full" and stat.S_ISREG(key[MODE]):
            self.hashes[rel] = hash_file(full)

    def _really_changed(self, rel: str, old: tuple, new: tuple) -> bool:
        """old != new; decide whether the layer must carry rel again."""
        if (old[MODE], old[INO], old[DEV]) != (new[MODE], new[INO], new[DEV]):
            return True
        same_meta = (old[UID], old[GID], old[MTIME]) == (new[UID], new[GID], new[MTIME])
        old_xa = self.xattrs.get(rel, ())
        old_hash = self.hashes.get(rel)
        self._record_extras(rel, new)
        if not same_meta or self.xattrs.get(rel, ()) != old_xa:
            return True
        if stat.S_ISDIR(new[MODE]):
            return False  # only its entries changed; they are reported themselves
        if stat.S_ISREG(new[MODE]):
            if old[SIZE] != new[SIZE]:
                return True
            if self.mode == "full":
                return self.hashes.get(rel) != old_hash
            return True  # ctime moved: content may have changed behind a restored mtime
        if stat.S_ISLNK(new[MODE]) or stat.S_ISCHR(new[MODE]) or stat.S_ISBLK(new[MODE]):
            return old[SIZE] != new[SIZE] or old[RDEV] != new[RDEV] or old[CTIME] != new[CTIME]
        return False

    def _adopt(self, old: dict[str, tuple], new: dict[str, tuple], scope: set[str] | None) -> Changes:
        added: list[str] = []
        modified: list[str] = []
        opaque: set[str] = set()
        for rel, key in new.items():
            prev = old.get(rel)
            if prev is None:
                added.append(rel)
                self._record_extras(rel, key)
            elif prev != key:
                if stat.S_ISDIR(key[MODE]) and stat.S_ISDIR(prev[MODE]) and (
                    prev[INO], prev[DEV]) != (key[INO], key[DEV]):
                    opaque.add(rel)  # deleted and recreated: hide everything below from lower layers
                    modified.append(rel)
                    self._record_extras(rel, key)
                elif self._really_changed(rel, prev, key):
                    modified.append(rel)
        if opaque:
            # everything under a recreated directory is new content
            moved = [r for r in modified if any(r.startswith(o + "/") for o in opaque)]
            for r in moved:
                modified.remove(r)
                added.append(r)
            unchanged_below = [r for r in new if r not in old or old[r] == new[r]]
            for r in unchanged_below:
                if r not in added and any(r.startswith(o + "/") for o in opaque):
                    added.append(r)
        gone = [rel for rel in old if rel not in new]
        gone_set = set(gone)
        deleted: list[str] = []
        for rel in gone:
            parent = posixpath.dirname(rel)
            if parent in gone_set:
                continue  # one whiteout for the top of a deleted tree
            if parent:
                pkey = new.get(parent) or self.state.get(parent)
                if pkey is None or not stat.S_ISDIR(pkey[MODE]) or parent in opaque:
                    continue  # parent replaced by a non-directory, or opaque: no whiteout needed
                if any(parent == o or parent.startswith(o + "/") for o in opaque):
                    continue
            deleted.append(rel)
        # adopt the new state
        for rel in gone:
            self.state.pop(rel, None)
            self.xattrs.pop(rel, None)
            self.hashes.pop(rel, None)
        self.state.update(new)
        return Changes(tuple(sorted(added)), tuple(sorted(modified)), tuple(sorted(deleted)), tuple(sorted(opaque)))
