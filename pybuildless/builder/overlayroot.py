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
empty upper dir. The kept dirs live in the stage's own directory (``steps/``),
removed with it. Copy-up xattrs (``trusted.overlay.origin``, ``impure``) in a lower
dir are not read by overlayfs, and with ``redirect_dir=nofollow`` and ``metacopy=off``
there are no redirects or metacopy files to follow. Names the step hard-linked
together are one inode of the kept dir, shown as one inode by the overlay, as after
a copy that keeps links. The new mount gives every path a new device number (and
the paths of the moved dirs new inode numbers): the stage root carries its
snapshot's state over (``fs.rekey``). When the stack would be too deep for one
mount (``store.stack.depth_refused``), or the root cannot be unmounted, the caller
copies the diff onto the root as before.
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
from pybuildless.sandbox.overlay_mount import in_user_namespace
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
    same_fs: bool  # every layer and the upper dir on one filesystem: inode numbers are the real ones
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
            try:
                _linux.mount("overlay", self.root, "overlay", 0, options + ",volatile")
            except OSError as e:  # a kernel before 5.10
                log.debug("overlay mount without volatile: %s", e)
                _linux.mount("overlay", self.root, "overlay", 0, options)
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
    same_fs = len({os.stat(path).st_dev for path in [*layers, upper]}) == 1
    entry = _Mounted(root, leases, layers, upper, work, same_fs)
    entry.mount(entry.lowers())
    with _lock:
        _mounted.append(entry)
    return True


def is_mounted(root: Path) -> bool:
    """Whether ``root`` is a stage root mounted here (RUN diffs can be stacked on it)."""
    with _lock:
        return any(entry.root == root for entry in _mounted)


@dataclass(frozen=True)
class Restacked:
    """A stage root mounted again with one more diff: the overlay's device, and the paths whose
    inode numbers may differ from before (those in the dirs that became lower dirs, parents
    first); None when any path's may (layers on several filesystems)."""

    device: int
    moved: tuple[str, ...] | None


def stack_upper(root: Path, run_upper: Path) -> Restacked | None:
    """Make ``run_upper`` (a RUN's upper dir, its overlay over ``root`` gone) the topmost lower
    dir of the stage root at ``root``; the dir is moved into the stage's directory. None, with
    ``run_upper`` and the root as they were, when it cannot be: the caller applies it instead."""
    with _lock:
        found = [entry for entry in _mounted if entry.root == root]
    if not found:
        return None
    entry = found[0]
    upper_used = _has_entries(entry.upper)
    count = len(entry.layers) + len(entry.kept) + upper_used + 1
    refused = depth_refused(count)
    if refused:
        log.debug("RUN diff applied onto %s, not stacked: %s", root, refused)
        return None
    started = time.perf_counter()
    try:
        _linux.umount(root)  # not lazily: a root still in use stays as it is
    except OSError as e:
        log.debug("RUN diff applied onto %s, not stacked: %s", root, e)
        return None
    unmounted = time.perf_counter()
    moves: list[tuple[Path, Path]] = []  # (from, to), undone when the new mount fails
    try:
        # read before they move: what the new stack shows from another dir than the old one did
        moved = sorted(set(_relpaths(run_upper)) | (set(_relpaths(entry.upper)) if upper_used else set())) \
            if entry.same_fs else None
        steps = root.parent / "steps"
        steps.mkdir(exist_ok=True)
        if upper_used:  # what COPY, WORKDIR... wrote since the last mount: a lower dir now
            moves.append((entry.upper, steps / str(len(entry.kept))))
        moves.append((run_upper, steps / str(len(entry.kept) + len(moves))))
        for source, target in moves:
            os.rename(source, target)
        if upper_used:
            entry.upper.mkdir(mode=0o755)
        entry.mount([*entry.lowers(), *(os.fspath(target) for _, target in moves)])
    except OSError as e:
        log.warning("RUN diff applied onto %s, not stacked: %s", root, e)
        _restore(entry, moves, upper_used)
        return None
    entry.kept.extend(target for _, target in moves)
    log.debug("stage root %s: %d lower dirs, remounted in %.1f ms (%.1f ms to unmount)", root, count,
              (time.perf_counter() - started) * 1000, (unmounted - started) * 1000)
    return Restacked(os.stat(root).st_dev,
                     None if moved is None else tuple(sorted(moved, key=lambda rel: rel.count("/"))))


def _relpaths(top: Path) -> list[str]:
    """Every path below ``top``, relative to it (no link followed)."""
    out: list[str] = []
    stack = [(os.fspath(top), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for e in it:
                rel = prefix + e.name
                out.append(rel)
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, rel + "/"))
    return out


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
