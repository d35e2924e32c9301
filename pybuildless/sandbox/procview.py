"""RUN steps where a fresh /proc cannot be mounted: the container's /proc, read-only.

The kernel lets a user namespace mount a new procfs only where an existing
one is fully visible (fs/namespace.c mount_too_revealing; user_namespaces(7)).
Inside a container whose /proc has masked or read-only sub-paths (Docker's and
Kubernetes' default ``maskedPaths``/``readonlyPaths``, unless
``--security-opt systempaths=unconfined`` or ``procMount: Unmasked``) a rootless
build's user namespace therefore gets EPERM for every step's /proc. Rootless
BuildKit has the same problem and the same answer, its no-process-sandbox mode
(``--oci-worker-no-process-sandbox``, documented in moby/buildkit
docs/rootless.md): no pid namespace for the step, and the container's /proc
bound in. Here it is bound recursively (the container's masks come along,
being locked mounts they could not be left out anyway), masked like a fresh
one and made read-only all the way down.

What the step can then see: the processes of the container (the executor and
its parent) and their command lines; not their environment, files or memory
(the executor is not dumpable, ``selfprotect``), and nothing outside the
container. The monitor pivots into the stage root itself, since there is no
init in a pid namespace to do it, so the container's own tree is detached from
the step exactly as in the usual case.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pybuildless.fs.mountinfo import mounts_below
from pybuildless.sandbox import _linux
from pybuildless.sandbox.mountplan import proc_protection, remount_readonly, run_steps

log = logging.getLogger(__name__)

_refusal: list[str | None] = []  # cached probe result: [] until probed
_warned = False


def _probe_fresh_proc() -> None:  # pragma: no cover - throwaway child
    _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWPID)
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    pid = os.fork()  # the first child is pid 1 of the new pid namespace
    if pid == 0:
        try:
            _linux.mount("proc", "/proc", "proc", _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC)
            os._exit(0)
        except OSError as exc:
            os._exit(100 + min(exc.errno or 0, 100))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code - 100 if code >= 100 else 0, f"mount proc: {os.strerror(code - 100) if code >= 100 else code}")


def fresh_proc_refused() -> str | None:
    """Why this process cannot give a step a fresh /proc in a new pid namespace (None: it can).
    Tried once per process in a throwaway child."""
    if not _refusal:
        _refusal.append(_linux.failure_in_child(_probe_fresh_proc, describe=str, limit=500, silent="refused"))
    return _refusal[0]


def use_container_proc() -> bool:
    """True where steps must get the container's /proc (and no pid namespace); warns once."""
    global _warned
    why = fresh_proc_refused()
    if why is None:
        return False
    if not _warned:
        _warned = True
        log.warning("RUN steps get this container's /proc read-only and no pid namespace of their own: a fresh "
                    "/proc is refused here (%s; the container's /proc has masked paths). Steps can see the "
                    "container's processes and their command lines, not their environment or files. Docker "
                    "--security-opt systempaths=unconfined or Kubernetes procMount: Unmasked restore a private /proc",
                    why)
    return True


def bind_container_proc(target: str | os.PathLike[str]) -> None:
    """Monitor, after unshare(CLONE_NEWNS): the container's /proc on ``target``, masked like a
    fresh one (runc's paths, where the container left them visible) and read-only throughout."""
    _linux.mount("/proc", target, None, _linux.MS_BIND | _linux.MS_REC)
    run_steps(proc_protection(target))
    if not _linux.make_tree_readonly(target):
        for point in [str(target)] + mounts_below(Path(target)):
            remount_readonly(point)


def enter_stage_root(root: str | os.PathLike[str], proc_target: str | os.PathLike[str] | None) -> None:
    """Monitor, last of its mounts: the container's /proc, then pivot into the stage root (a mount
    point by now) so that the container's tree is detached from everything started after."""
    if proc_target is not None:
        bind_container_proc(proc_target)
    _linux.pivot_into(str(root))
