"""Stage roots that are overlay mounts of stored layers (``--layer-store`` as real root).

FROM then costs a mount whatever the base's size, and removing the stage root
removes one upper dir. The mounts live in a mount namespace of the build's own
(entered while the process is still single-threaded: a namespace is a property
of each thread, and every thread and sandbox started later inherits it), so
they vanish with the process however it ends.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from pybuildless.sandbox import _linux
from pybuildless.sandbox.overlay_mount import in_user_namespace
from pybuildless.sandbox.userns import in_reexecuted_namespace
from pybuildless.store.stack import lowerdir_option, plan_stack, topmost_occurrences

log = logging.getLogger(__name__)

MNT_DETACH = 2
_state = {"private": False}
_mounted: list[tuple[Path, list]] = []  # (mount point, leases)
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
    upper, work = root.parent / "upper", root.parent / "work"
    upper.mkdir(mode=0o755)
    work.mkdir(mode=0o700)
    fds = [os.open(lease.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for lease in stack]
    try:
        options = (f"lowerdir={lowerdir_option(fds)},upperdir={upper},workdir={work},"
                   "index=off,metacopy=off,redirect_dir=nofollow")
        _linux.mount("overlay", root, "overlay", 0, options)
    finally:
        for fd in fds:
            os.close(fd)
    with _lock:
        _mounted.append((root, leases))
    return True


def unmount(root: Path) -> None:
    """Unmount the stage root at ``root`` and give back its layers; nothing when it is no mount of ours."""
    with _lock:
        found = [entry for entry in _mounted if entry[0] == root]
        _mounted[:] = [entry for entry in _mounted if entry[0] != root]
    for entry in found:
        _unmount(*entry)


def unmount_all() -> None:
    with _lock:
        mounted = list(_mounted)
        _mounted.clear()
    for entry in reversed(mounted):
        _unmount(*entry)


def _unmount(root: Path, leases: list) -> None:
    try:
        _linux.umount(root, MNT_DETACH)
    except OSError as e:
        log.warning("cannot unmount the stage root %s: %s", root, e)
    for lease in leases:
        lease.close()
