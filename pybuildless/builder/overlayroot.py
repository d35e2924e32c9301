"""Stage roots that are overlay mounts of stored layers (``--layer-store`` as real root).

FROM then costs a mount whatever the base's size, and removing the stage root
removes one upper dir. The mounts live in a mount namespace of the build's own
(entered while the process is still single-threaded: a namespace is a property
of each thread, and every thread and sandbox started later inherits it), so
they vanish with the process however it ends.

A RUN's diff is stacked, not copied (``stack_upper``), as a snapshotter stacks
each step's diff: the RUN ran on an overlay over this root, so its upper dir
holds exactly what the step changed relative to the merged root, with whiteouts
and opaque markers overlayfs honours in a lower dir too. The root is unmounted
and mounted again with that upper dir as the topmost lower dir, above the root's
previous upper dir (a lower too, when COPY or WORKDIR wrote to it) and a fresh,
empty upper dir. What other steps write goes into the upper dir and is stacked the
same way once a snapshot has read it (``stack_live_upper``, ``builder.overlaysnapshot``),
so each snapshot finds the changes since the one before in the dirs above what it saw.
The kept dirs live in the stage's own directory (``steps/``), removed with it.
Copy-up xattrs (``trusted.overlay.origin``, ``impure``) in a lower dir are not read
by overlayfs, and with ``redirect_dir=nofollow`` and ``metacopy=off`` there are no
redirects or metacopy files to follow. Names the step hard-linked together are one
inode of the kept dir, shown as one inode by the overlay, as after a copy that
keeps links. When the stack would be too deep for one mount
(``store.stack.depth_refused``), or the root cannot be unmounted, the caller copies
the diff onto the root as before.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pybuildless.sandbox import _linux
from pybuildless.sandbox.overlay_mount import in_user_namespace, mount_volatile
from pybuildless.sandbox.userns import in_reexecuted_namespace
from pybuildless.store.stack import depth_refused, lowerdir_option, plan_stack, topmost_occurrences

log = logging.getLogger(__name__)

MNT_DETACH = 2
_state = {"private": False}
_mounted: list["_Mounted"] = []
_lock = threading.Lock()


def enter_private_namespace() -> bool:
    """Give this process its own mount namespace; False when it cannot (then no overlay roots)."""
    if _state["private"]:
        return True
    # the re-executed rootless build counts even with an identity id map, which in_user_namespace
    # cannot tell from the initial namespace: renames on an overlay mounted there fail (EXDEV)
    if os.geteuid() != 0 or in_user_namespace() or in_reexecuted_namespace() or threading.active_count() != 1:
        return False
    try:
        _linux.unshare(_linux.CLONE_NEWNS)
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    except OSError as e:
        log.debug("no private mount namespace for stage roots: %s", e)
        return False
    _state["private"] = True
    return True


@dataclass
class _Mounted:
    """One stage root mounted here: what its overlay is made of (state, not a value: it grows)."""

    root: Path
    leases: list  # the stored layers' leases, held until the mount goes
    layers: list[str]  # the stored layers' dirs, lowest first
    upper: Path
    work: Path
    kept: list[Path] = field(default_factory=list)  # stacked upper dirs, lowest first

    def lowers(self) -> list[str]:
        return [*self.layers, *map(os.fspath, self.kept)]

    def mount(self, lowers: list[str]) -> None:
        # volatile: no sync of the upper dir's filesystem when the root is unmounted (each stacked
        # RUN unmounts it): a stage root does not outlive the build. The kernel then refuses the
        # work dir until its volatile marker is gone.
        shutil.rmtree(self.work / "work" / "incompat", ignore_errors=True)
        fds = [os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in lowers]
        try:
            options = (f"lowerdir={lowerdir_option(fds)},upperdir={self.upper},workdir={self.work},"
                       "index=off,metacopy=off,redirect_dir=nofollow")
            mount_volatile(os.fspath(self.root), options)
        finally:
            for fd in fds:
                os.close(fd)


def mount_root(leases: list, root: Path) -> bool:
    """Mount the stored layers of ``leases`` (lowest first) at the empty directory ``root``,
    with a fresh upper dir next to it. False when they cannot be stacked as they are."""
    if not _state["private"]:
        return False
    stack = topmost_occurrences(leases, key=lambda lease: os.path.realpath(lease.path))
    plan = plan_stack([lease.layer for lease in stack], userxattr=False)
    if not plan.mountable:
        log.info("stage root copied from the layer store, not mounted: %s", plan.reason)
        return False
    layers = [os.fspath(lease.path) for lease in stack]
    upper, work = root.parent / "upper", root.parent / "work"
    upper.mkdir(mode=0o755)
    work.mkdir(mode=0o700)
    entry = _Mounted(root, leases, layers, upper, work)
    entry.mount(entry.lowers())
    with _lock:
        _mounted.append(entry)
    return True


def is_mounted(root: Path) -> bool:
    """Whether ``root`` is a stage root mounted here (RUN diffs can be stacked on it)."""
    return _find(root) is not None


def lower_dirs(root: Path) -> list[str]:
    """The lower dirs of the stage root mounted at ``root``, lowest first (empty when it is no mount of ours)."""
    entry = _find(root)
    return entry.lowers() if entry is not None else []


def upper_dir(root: Path) -> Path | None:
    """The upper dir of the stage root mounted at ``root``: every write since the last restack."""
    entry = _find(root)
    return entry.upper if entry is not None else None


def stack_live_upper(root: Path) -> bool:
    """Make what was written to the stage root at ``root`` since its last mount a lower dir (the
    upper dir, moved into the stage's directory), under a fresh upper dir; True when done or when
    nothing was written. False, with the root as it was, when the stack would be too deep or the
    root cannot be mounted again."""
    entry = _find(root)
    if entry is None:
        return False
    if not _has_entries(entry.upper):
        return True
    return _restack(entry, None)


def stack_upper(root: Path, run_upper: Path) -> bool:
    """Make ``run_upper`` (a RUN's upper dir, its overlay over ``root`` gone) the topmost lower
    dir of the stage root at ``root``, above what was written to the root itself; the dirs are
    moved into the stage's directory. False, with ``run_upper`` and the root as they were, when
    it cannot be: the caller applies it instead."""
    entry = _find(root)
    return entry is not None and _restack(entry, run_upper)


def _find(root: Path) -> _Mounted | None:
    with _lock:
        found = [entry for entry in _mounted if entry.root == root]
    return found[0] if found else None


def _restack(entry: _Mounted, run_upper: Path | None) -> bool:
    """Mount ``entry`` again with its upper dir (when used) and then ``run_upper`` (when given) as
    its topmost lower dirs, under a fresh upper dir."""
    root = entry.root
    upper_used = _has_entries(entry.upper)
    count = len(entry.layers) + len(entry.kept) + upper_used + (run_upper is not None)
    refused = depth_refused(count)
    if refused:
        log.debug("stage root %s not stacked again: %s", root, refused)
        return False
    started = time.perf_counter()
    try:
        _linux.umount(root)  # not lazily: a root still in use stays as it is
    except OSError as e:
        log.debug("stage root %s not stacked again: %s", root, e)
        return False
    unmounted = time.perf_counter()
    moves: list[tuple[Path, Path]] = []  # (from, to), undone when the new mount fails
    try:
        steps = root.parent / "steps"
        steps.mkdir(exist_ok=True)
        if upper_used:  # what COPY, WORKDIR... wrote since the last mount: a lower dir now
            moves.append((entry.upper, steps / str(len(entry.kept))))
        if run_upper is not None:
            moves.append((run_upper, steps / str(len(entry.kept) + len(moves))))
        for source, target in moves:
            os.rename(source, target)
        if upper_used:
            entry.upper.mkdir(mode=0o755)
        entry.mount([*entry.lowers(), *(os.fspath(target) for _, target in moves)])
    except OSError as e:
        log.warning("stage root %s not stacked again: %s", root, e)
        _restore(entry, moves, upper_used)
        return False
    entry.kept.extend(target for _, target in moves)
    log.debug("stage root %s: %d lower dirs, remounted in %.1f ms (%.1f ms to unmount)", root, count,
              (time.perf_counter() - started) * 1000, (unmounted - started) * 1000)
    return True


def _restore(entry: _Mounted, moves: list[tuple[Path, Path]], upper_used: bool) -> None:
    """Undo a failed ``stack_upper``: the dirs back where they were, the previous stack mounted."""
    if upper_used and entry.upper.is_dir() and not _has_entries(entry.upper):
        entry.upper.rmdir()
    for source, target in reversed(moves):
        if target.exists() and not source.exists():
            os.rename(target, source)
    entry.mount(entry.lowers())


def _has_entries(path: Path) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is not None


def unmount(root: Path) -> None:
    """Unmount the stage root at ``root`` and give back its layers; nothing when it is no mount of ours."""
    with _lock:
        found = [entry for entry in _mounted if entry.root == root]
        _mounted[:] = [entry for entry in _mounted if entry.root != root]
    for entry in found:
        _unmount(entry)


def unmount_all() -> None:
    with _lock:
        mounted = list(_mounted)
        _mounted.clear()
    for entry in reversed(mounted):
        _unmount(entry)


def _unmount(entry: _Mounted) -> None:
    # the upper dirs it stacked stay in the stage's directory, removed with it (fs.trash)
    try:
        _linux.umount(entry.root, MNT_DETACH)
    except OSError as e:
        log.warning("cannot unmount the stage root %s: %s", entry.root, e)
    for lease in entry.leases:
        lease.close()
