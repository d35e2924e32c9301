"""Can stored layers be stacked as overlay lower dirs, giving what applying their tars gives?

Layers are stored alone (one entry per diff_id, shared by every image that has
it), so what they mean together is only known when they are stacked. Three
things make a plain stack differ from applying the tars, and each sends the
caller to a copy (``store.copy``) instead:

* a whiteout in a directory that no lower layer has: overlayfs filters
  whiteouts only out of directories it merges, so it would list the name;
* a parent directory the tar did not carry (``implicit``) over a lower
  directory with other metadata: the overlay shows the upper one's, applying
  the tar keeps the lower one's;
* the mount options: at most 500 lower dirs (overlayfs' limit), and the whole
  option string within one page for mount(2) (``depth_refused``; the RUN diffs a stage
  stacks above its base, ``builder.overlayroot``, count too). Lower dirs are named by
  ``/proc/self/fd/N`` of O_PATH fds the mounting process holds, which keeps
  ~200 layers within a page whatever the store's path.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from pybuildless.store.layers import StoredLayer

T = TypeVar("T")

MAX_LOWER = 500  # OVL_MAX_STACK, fs/overlayfs/params.h
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_OPTION_OVERHEAD = 600  # upperdir=, workdir= (the caller's paths are checked with the rest) and flags


@dataclass(frozen=True)
class StackPlan:
    """Whether stored layers can be stacked as overlay lower dirs, and why not."""

    mountable: bool
    reason: str = ""

    @classmethod
    def ok(cls) -> "StackPlan":
        return cls(True)


def _meta(path: str) -> tuple | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    try:
        xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)
                  if ".overlay." not in n}
    except OSError:
        xattrs = {}
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, tuple(sorted(xattrs.items()))


def _below_dir(layers: Sequence[StoredLayer], i: int, rel: str) -> tuple | None:
    """Metadata of the nearest layer below ``i`` holding ``rel`` as a directory."""
    for j in range(i - 1, -1, -1):
        found = _meta(os.path.join(layers[j].path, rel))
        if found is not None:
            return found
    return None


def plan_stack(layers: Sequence[StoredLayer], *, userxattr: bool) -> StackPlan:
    """Whether ``layers`` (lowest first) can be mounted as they are stored, with an upper dir on top."""
    if not layers:
        return StackPlan(False, "no layers")
    too_deep = depth_refused(len(layers))
    if too_deep:
        return StackPlan(False, too_deep)
    want = "user.overlay.opaque" if userxattr else "trusted.overlay.opaque"
    for i, layer in enumerate(layers):
        meta = layer.meta
        if not meta.char_whiteouts:
            return StackPlan(False, f"layer {meta.diff_id} keeps its whiteouts as files")
        if meta.opaque_dirs and meta.opaque_xattr != want:
            return StackPlan(False, f"layer {meta.diff_id} marks opaque directories with {meta.opaque_xattr}")
        for rel in layer.whiteouts():
            parent = os.path.dirname(rel)
            if parent and _below_dir(layers, i, parent) is None:
                return StackPlan(False, f"a whiteout of /{rel} sits in a directory no lower layer has")
        for rel in layer.implicit_dirs():
            below = _below_dir(layers, i, rel)
            if below is not None and below != _meta(os.path.join(layer.path, rel)):
                return StackPlan(False, f"/{rel} is not in layer {meta.diff_id}'s tar and differs below")
    return StackPlan.ok()


def depth_refused(count: int) -> str:
    """Why ``count`` lower dirs (named as ``lowerdir_option`` names them) cannot be mounted
    in one overlay; empty when they can."""
    if count > MAX_LOWER:
        return f"{count} layers, more than overlayfs stacks ({MAX_LOWER})"
    if count * len("/proc/self/fd/1024:") + _OPTION_OVERHEAD > _PAGE:
        return f"{count} layers do not fit in one page of mount options"
    return ""


def topmost_occurrences(items: Sequence[T], key: Callable[[T], object]) -> list[T]:
    """``items`` (lowest first) with each repeated layer kept only where it is highest.

    An image may hold one layer twice (two empty layers of ``--force-build-metadata``, a file
    added, removed and added again), and overlayfs refuses a lower dir given twice (ELOOP,
    "overlapping layers"). Dropping the lower copy changes nothing: every path it holds, and
    every whiteout or opaque directory in it, the higher copy holds too, above it."""
    highest: dict[object, int] = {key(item): i for i, item in enumerate(items)}
    return [item for i, item in enumerate(items) if highest[key(item)] == i]


def lowerdir_option(fds: Sequence[int]) -> str:
    """``lowerdir=`` value for O_PATH fds of the layers, lowest first (overlayfs lists the top first).

    The fds must be opened in the mount namespace that mounts: overlayfs clones each
    lower dir's mount, which fails ("failed to clone lowerpath") for another namespace's.
    """
    return ":".join(f"/proc/self/fd/{fd}" for fd in reversed(fds))
