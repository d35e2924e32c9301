"""When a build's work dir is removed: before the build exits, or after it by a detached process.

The work dir goes after the outputs and digest files are written and the result line is
printed. Removing it can take seconds on a disk with slow metadata (thousands of entries),
so a successful build leaves that to a detached process (``fs.trash``) and exits at once.
The build waits for the removal instead when:

- it runs in place (Kaniko mode): the container's ``/`` is the build's, as before;
- it failed: a failed build leaves nothing behind, and nobody waits for its result;
- it is PID 1 of its PID namespace (the executor image as a container's entrypoint, a
  Kubernetes pod's container): its exit kills every process left in the namespace, the
  remover included, so the garbage would stay on a work dir that outlives the container;
- the caller asks for it: ``PYBUILDLESS_CLEANUP=wait`` (a CI step that measures disk use,
  or snapshots the workspace, right after the build).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pybuildless.fs import trash
from pybuildless.fs.mountinfo import mounts_below

log = logging.getLogger(__name__)

ENV_CLEANUP = "PYBUILDLESS_CLEANUP"


def must_wait(*, in_place: bool, succeeded: bool) -> bool:
    """Whether the work dir is removed before the build exits (see the module's docstring)."""
    return in_place or not succeeded or os.getpid() == 1 or os.environ.get(ENV_CLEANUP, "").lower() == "wait"


def start(work: Path, *, in_place: bool) -> None:
    """Trees the build gives up below ``work`` are moved to its trash from now on (not in place,
    where the build removes everything there and then, as before)."""
    if not in_place:
        trash.register(work)


def finish(work: Path, *, in_place: bool, succeeded: bool) -> None:
    """Remove ``work`` (every mount in it already released) and the stale trash of dead builds next to it."""
    wait = must_wait(in_place=in_place, succeeded=succeeded)
    if not wait and _mounts_below(work):
        # a mount that would not go: never handed to a process that outlives the build (it
        # would keep the mount alive in its namespace); removed here, as before
        log.warning("mounts left below %s: its removal is not deferred", work)
        wait = True
    trash.dispose(work, wait=wait)


def _mounts_below(work: Path) -> list[str]:
    try:
        return mounts_below(work)
    except OSError:
        return []
