"""Snapshots of a stage root mounted as an overlay of stored layers (``builder.overlayroot``).

Nothing is recorded when the root is laid: the state before the first step is the
read-only stack of lower dirs, and every later change is in a dir above it. The changes
since a count of lower dirs are in the dirs stacked since (a RUN's upper dir, and what
was written to the root before it) and in the live upper dir (COPY, ADD, WORKDIR, a RUN
that ran on the root itself), read against the dirs below them
(``fs.overlaydiff.stack_changes``). A snapshot then keeps what it saw: when the paths
changed since that count are few (``RECORD_LIMIT``), a record of what each showed, which
the next snapshot compares them with; else the live upper dir stacked as one more lower
dir (a remount), so the next one finds only later changes above it. A RUN's upper
dir already had its changes read by the sandbox: they are taken as they are, the dir is
not walked again; only what was written to the root just before the RUN (the sandbox's
mount points, a missing WORKDIR: a few entries) is read here, and where the two touch
the same paths in a way that reading them apart could get wrong, both dirs are read.

``take_paths`` reports what ``fs.snapshot.Snapshotter.take_paths`` reports for the same
steps on a plain directory, so the images are the same: only the paths named, what is
below them and their parent directories. A change elsewhere (the sandbox's mount points
for /etc/hosts and /etc/resolv.conf, made and removed around each RUN, leave /etc with a
new mtime) is kept back with what was there before it, and reported by the first later
snapshot that looks at that path, as the plain directory's recorded state does.

FROM thus costs the mount, whatever the base's size, and each step its own changes.
When the live upper dir cannot be stacked (the stack would be too deep for one mount,
the root is busy), the rest of the stage falls back to the whole-root snapshots of a
plain directory: one walk of the root as it is then, and RUN diffs applied onto it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import time
from pathlib import Path
from typing import Iterable

from pybuildless.builder import overlayroot
from pybuildless.fs.changes import CTIME, GID, INO, MODE, MTIME, UID, Changes, stat_key
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.overlay import without_ignored
from pybuildless.fs.overlaydiff import Seen, compared, seen_at, stack_changes
from pybuildless.fs.snapshot import Snapshotter

log = logging.getLogger(__name__)

# up to this many changed paths since the last restack, a snapshot records what it saw instead of
# stacking the upper dir (a remount, one more lower dir): a COPY of a few files costs no mount
RECORD_LIMIT = 128


class _Scope:
    """The paths a ``take_paths`` looks at: its tops, everything below them and their parents."""

    def __init__(self, tops: Iterable[str]) -> None:
        self.tops = set(tops)
        self.below = tuple(top + "/" for top in self.tops)
        self.parents = {posixpath.dirname(top) for top in self.tops}
        for parent in list(self.parents):
            while parent:
                parent = posixpath.dirname(parent)
                self.parents.add(parent)
        self.parents.discard("")

    def __contains__(self, rel: str) -> bool:
        return rel in self.tops or rel in self.parents or rel.startswith(self.below)


class OverlaySnapshot:
    """The snapshots of the mounted stage root at ``root``, with the calls of ``Snapshotter``
    that stage builders make (``take``, ``take_paths``, ``baseline``, ``close``)."""

    def __init__(self, root: Path, ignore: IgnoreList | None = None) -> None:
        self.root = root
        self.ignore = ignore or IgnoreList.empty()
        self._seen = len(overlayroot.lower_dirs(root))  # the lower dirs below every change since
        # what the last snapshot saw where it differed from those lower dirs (the upper dir kept, not
        # stacked), and which of those directories were new or made again there
        self._records: dict[str, Seen | None] = {}
        self._fresh: set[str] = set()
        self._read: tuple[int, Changes] | None = None  # (lower dirs after a stacked RUN, its changes)
        self._held: dict[str, Seen | None] = {}  # changes no snapshot looked at yet: what was there
        self._paths = Snapshotter(root, self.ignore, watch=False)  # resolves take_paths' paths only
        self._walked: Snapshotter | None = None  # after a refused restack: whole-root snapshots

    def take(self) -> Changes:
        if self._walked is not None:
            return self._walked.take()
        return self._take(None)

    def take_paths(self, paths: Iterable[str]) -> Changes:
        if self._walked is not None:
            return self._walked.take_paths(paths)
        return self._take(_Scope(self._paths.tops(paths)))

    def baseline(self) -> None:
        """What the root shows now is the state: stacked without being read (a layer from the cache)."""
        if self._walked is not None:
            self._walked.baseline()
            return
        self._held.clear()
        self._commit(None, [])

    def close(self) -> None:
        if self._walked is not None:
            self._walked.close()

    def keep_run_upper(self, upper: Path, changes: Changes) -> bool:
        """Stack a RUN's upper dir (``changes``: what the sandbox read from it against the
        root) as the root's topmost lower dir; False when it cannot be (the sandbox applies it)."""
        if self._walked is not None:
            return False
        before = len(overlayroot.lower_dirs(self.root))
        if not overlayroot.stack_upper(self.root, upper):
            return False
        after = len(overlayroot.lower_dirs(self.root))
        # the sandbox's reading covers the RUN's dir; what was written to the root before it (the
        # sandbox's mount points, a missing WORKDIR, earlier steps' recorded writes) is the dir below
        self._read = (after, changes) if before == self._seen and after - before in (1, 2) else None
        return True

    def _take(self, scope: _Scope | None) -> Changes:
        started = time.perf_counter()
        lowers = overlayroot.lower_dirs(self.root)
        upper = overlayroot.upper_dir(self.root)
        if upper is None:
            raise RuntimeError(f"stage root {self.root} is not mounted")
        now = [os.fspath(upper), *reversed(lowers)]
        since, cumulative = None, None
        if self._read is not None and self._read[0] == len(lowers) and not _has_entries(upper):
            since = self._with_run(lowers, without_ignored(self._read[1], self.ignore))
            how = "as the sandbox read it" + (" over what was written before it" if len(lowers) > self._seen + 1 else "")
        if since is None:
            cumulative = stack_changes(lowers[:self._seen], [*lowers[self._seen:], upper], self.ignore)
            since = self._since(cumulative, now)
            how = f"from {len(lowers) - self._seen + 1} dir(s) over {self._seen}"
        changes = self._nested_opaque(self._scoped(since, scope, now), now)
        read = time.perf_counter()
        self._commit(cumulative, now)
        log.debug("snapshot of %s %s: %d paths, %d deleted, in %.1f ms (%.1f ms to keep)", self.root, how,
                  len(changes.added) + len(changes.modified), len(changes.deleted),
                  (time.perf_counter() - started) * 1000, (time.perf_counter() - read) * 1000)
        return changes

    def _nested_opaque(self, changes: Changes, now: list[str]) -> Changes:
        """``changes`` with every directory made below a directory made again counted as made again
        itself when a directory was there before, as a plain directory's snapshot counts it (its
        inode changed); the overlay marks only the top, which hides the same."""
        if not changes.opaque:
            return changes
        tops = tuple(rel + "/" for rel in changes.opaque)
        nested = [rel for rel in changes.added if rel.startswith(tops) and rel not in changes.opaque
                  and _is_dir(seen_at(now, rel)) and _is_dir(self._old(rel))]
        if not nested:
            return changes
        return Changes(changes.added, changes.modified, changes.deleted, tuple(sorted({*changes.opaque, *nested})))

    def _old(self, rel: str) -> Seen | None:
        """What the last snapshot saw at ``rel``."""
        if rel in self._records:
            return self._records[rel]
        for parent in _ancestors(rel):
            if parent in self._records:
                seen = self._records[parent]
                if seen is None or not seen.is_dir or parent in self._fresh:
                    return None  # below a removed, replaced or new directory: what was not recorded was not there
        lowers = overlayroot.lower_dirs(self.root)[:self._seen]
        return seen_at(lowers[::-1], rel)

    def _since(self, cumulative: Changes, now: list[str]) -> Changes:
        """The changes since the last snapshot, from ``cumulative`` (those since the lower dirs it
        counted): as they are when it recorded nothing, else compared path by path with what it saw."""
        if not self._records:
            return cumulative
        paths = {*cumulative.added, *cumulative.modified, *cumulative.deleted, *cumulative.opaque, *self._records}
        parts = [compared(rel, self._old(rel), seen_at(now, rel)) for rel in paths]
        return _topmost_deletions(_merge(parts), now)

    def _with_run(self, lowers: list[str], run: Changes) -> Changes | None:
        """The changes since the last snapshot when they are a RUN's (``run``, read by the sandbox
        against the root as it was then) over what was written to the root before it (the dir
        below the RUN's, read here: a few entries). None when the two meet where reading them
        apart could differ from reading them together (one removes, replaces or makes a path
        the other has something at or below)."""
        if len(lowers) == self._seen + 1 and not self._records:
            return run
        written = lowers[:self._seen + 1] if len(lowers) == self._seen + 2 else lowers[:self._seen]
        before = self._since(stack_changes(lowers[:self._seen], written[self._seen:], self.ignore), written[::-1])
        made = set(before.added) | set(before.deleted) | set(before.opaque)
        replaced = set(run.added) | set(run.deleted) | set(run.opaque)
        if _meets(run, made) or _meets(before, set(run.deleted) | set(run.opaque)) or _meets(before, replaced):
            return None
        both = set(before.modified) & set(run.modified)
        if both:  # a directory whose metadata both changed: compared from before the first
            now = lowers[::-1]
            before = Changes(before.added, tuple(p for p in before.modified if p not in both), before.deleted,
                             before.opaque)
            run = Changes(run.added, tuple(p for p in run.modified if p not in both), run.deleted, run.opaque)
            return _merge([before, run, *(compared(rel, self._old(rel), seen_at(now, rel)) for rel in both)])
        return _merge([before, run])

    def _scoped(self, since: Changes, scope: _Scope | None, now: list[str]) -> Changes:
        """``since`` (the changes since the last snapshot) within ``scope``, with the held changes
        it reaches compared from what was there when they were held; the rest is held."""
        parts: list[Changes] = []
        kept: dict[str, list[str]] = {"added": [], "modified": [], "deleted": [], "opaque": []}
        for kind, paths in (("added", since.added), ("modified", since.modified), ("deleted", since.deleted),
                            ("opaque", since.opaque)):
            for rel in paths:
                if rel in self._held:
                    continue  # compared below, from what was there before
                if scope is None or rel in scope:
                    kept[kind].append(rel)
                else:
                    self._held[rel] = self._old(rel)
        parts.append(Changes(**{kind: tuple(paths) for kind, paths in kept.items()}))
        held = [rel for rel in self._held if scope is None or rel in scope]
        for rel in held:
            parts.append(compared(rel, self._held.pop(rel), seen_at(now, rel)))
        return _topmost_deletions(_merge(parts), now) if held else _merge(parts)

    def _commit(self, cumulative: Changes | None, now: list[str]) -> None:
        """Make what the root shows now what the next snapshot compares with: nothing to do when
        nothing was written to the upper dir since the last restack; else a record of the few
        paths that differ from the lower dirs, or, for more, the upper dir stacked as a lower dir."""
        self._read = None
        upper = overlayroot.upper_dir(self.root)
        if upper is not None and not _has_entries(upper):
            self._seen, self._records, self._fresh = len(overlayroot.lower_dirs(self.root)), {}, set()
            return
        paths = {*cumulative.added, *cumulative.modified, *cumulative.deleted} if cumulative is not None else None
        if paths is not None and len(paths) <= RECORD_LIMIT:
            self._records = {rel: seen_at(now, rel) for rel in paths}
            self._fresh = set(cumulative.opaque) | {
                rel for rel in cumulative.added if (seen := self._records[rel]) is not None and seen.is_dir}
            return
        if overlayroot.stack_live_upper(self.root):
            self._seen, self._records, self._fresh = len(overlayroot.lower_dirs(self.root)), {}, set()
            return
        log.info("stage root %s: the upper dir cannot be stacked again; later snapshots walk the root",
                 self.root)
        # held changes make no inotify event the walks would see: with some, every take() walks
        walked = Snapshotter(self.root, self.ignore, watch=not self._held)
        walked.baseline()
        self._hand_over_held(walked, now)
        self._walked = walked

    def _hand_over_held(self, walked: Snapshotter, now: list[str]) -> None:
        """Put what the held paths showed when they were held into ``walked``'s state, as a plain
        directory's snapshots would still have it, so that its later snapshots report them."""
        for rel, old in self._held.items():
            change = compared(rel, old, seen_at(now, rel))
            if change.empty:
                continue
            if rel in change.added:  # nothing was there, nor below it
                below = rel + "/"
                for gone in [r for r in walked.state if r == rel or r.startswith(below)]:
                    del walked.state[gone]
                    walked.xattrs.pop(gone, None)
                    walked.hashes.pop(gone, None)
                continue
            assert old is not None
            current = walked.state.get(rel)
            if current is None:  # deleted since: only the top needs to be known
                walked.state[rel] = stat_key(old.st)
                continue
            key = list(current)
            key[MODE], key[UID], key[GID], key[MTIME] = old.st.st_mode, old.st.st_uid, old.st.st_gid, \
                old.st.st_mtime_ns
            key[CTIME] = -1  # differs from any time now: compared again, xattrs included
            if rel in change.opaque or not (old.is_dir and stat.S_ISDIR(current[MODE])):
                key[INO] = -1  # another entry: made again, or replaced
            walked.state[rel] = tuple(key)
            walked.xattrs[rel] = old.meta[4] if old.meta is not None else ()
        self._held.clear()


def _topmost_deletions(changes: Changes, now: list[str]) -> Changes:
    """``changes`` with one deletion for the top of a removed tree and none below a directory made
    again or new, nor in a directory that is not one now (as ``Snapshotter`` reports them)."""
    gone = set(changes.deleted) | set(changes.opaque) | set(changes.added)
    deleted = tuple(rel for rel in changes.deleted if not any(parent in gone for parent in _ancestors(rel))
                    and _is_dir(seen_at(now, posixpath.dirname(rel))))
    return Changes(changes.added, changes.modified, deleted, changes.opaque)


def _merge(parts: list[Changes]) -> Changes:
    added = {rel for part in parts for rel in part.added}
    modified = {rel for part in parts for rel in part.modified} - added
    return Changes(tuple(sorted(added)), tuple(sorted(modified)),
                   tuple(sorted({rel for part in parts for rel in part.deleted})),
                   tuple(sorted({rel for part in parts for rel in part.opaque})))


def _meets(changes: Changes, paths: set[str]) -> bool:
    """Whether ``changes`` has something at or below one of ``paths``."""
    if not paths:
        return False
    below = tuple(p + "/" for p in paths)
    return any(rel in paths or rel.startswith(below)
               for rel in (*changes.added, *changes.modified, *changes.deleted, *changes.opaque))


def _ancestors(rel: str) -> Iterable[str]:
    while "/" in rel:
        rel = rel.rpartition("/")[0]
        yield rel


def _is_dir(seen: Seen | None) -> bool:
    return seen is not None and seen.is_dir


def _has_entries(path: Path) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is not None
