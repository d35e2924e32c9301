"""Keep in-place RUN steps away from the executor's own prefix (``/kaniko``).

In Kaniko mode the build root is the executor container's ``/``, so a RUN step
could read ``/kaniko/.docker/config.json`` (the registry credentials), the
executor's scratch files and caches, and bake them into the image. The
executor itself keeps its view of ``/kaniko``; only the step's mount namespace
gets an empty read-only tmpfs over each hidden directory. Three ways:

* ``namespaces``: the process may create mount and pid namespaces
  (CAP_SYS_ADMIN: a privileged container, or root on a build host). The
  monitor's private mount namespace gets the tmpfs; the step loses
  CAP_SYS_ADMIN so it cannot unmount it.
* ``userns``: no CAP_SYS_ADMIN, but a user namespace can be created (Docker
  with ``--security-opt seccomp=unconfined``, Kubernetes pods without a
  RuntimeDefault seccomp profile). The monitor unshares a user and a mount
  namespace; a helper it forked before, still real root in the container with
  CAP_SETUID/CAP_SETGID, writes an identity map of every id the container has,
  so file owners, ``chown`` and ``useradd`` behave as before. The tmpfs is
  mounted in there, the step keeps only the container's own capabilities
  (without CAP_SYS_ADMIN), and any namespace it makes itself copies the tmpfs
  as a locked mount (user_namespaces(7), "Restrictions on mount namespaces"),
  which cannot be removed to reveal what is below. The step then has no pid
  namespace (a fresh /proc is refused under a container's masked /proc), so
  the /proc directories of the processes alive before it (the executor, a CI
  job's shell) are covered as well: ``/proc/PID/root`` of a dumpable one would
  lead back to the real ``/kaniko``.
* ``none``: neither is possible (Docker's default seccomp profile refuses
  user namespaces to a container without CAP_SYS_ADMIN). The step can read the
  prefix; a warning says so once per process.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import Iterable, Sequence

from pybuildless.sandbox import _linux
from pybuildless.sandbox.userns_check import write_proc_file

log = logging.getLogger(__name__)

MODES = ("namespaces", "userns", "none")
CAP_SYS_ADMIN = 21
_HIDE_FLAGS = _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
_warned = False


def default_hidden_dirs(scratch_parent: Path | None = None) -> tuple[str, ...]:
    """The executor's prefix (``$KANIKO_DIR``, default /kaniko) and, when elsewhere, its work dir."""
    dirs = [os.environ.get("KANIKO_DIR") or "/kaniko"]
    if scratch_parent is not None:
        # scratch_parent is <work>/scratch; the whole work dir (layers, blobs, context copies) goes
        work = os.path.dirname(os.path.abspath(scratch_parent))
        if not any(work == d or work.startswith(d.rstrip("/") + "/") for d in dirs):
            dirs.append(work)
    return tuple(existing_dirs(dirs))


def existing_dirs(paths: Iterable[str]) -> list[str]:
    out = []
    for path in paths:
        path = os.path.abspath(path)
        if path == "/":
            continue  # hiding / would hide the build itself
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                out.append(path)
        except OSError:
            continue
    return out


def bounding_set() -> frozenset[int]:
    """This process's capability bounding set (CapBnd in /proc/self/status)."""
    try:
        # bytes: this may run chrooted into a root without the interpreter's codec modules
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapBnd:"):
                    mask = int(line.split(b":", 1)[1].strip(), 16)
                    return frozenset(c for c in range(64) if mask >> c & 1)
    except (OSError, ValueError):
        pass
    return frozenset()


def step_capabilities() -> frozenset[int]:
    """What a step keeps where the prefix is hidden: the container's own set, minus CAP_SYS_ADMIN."""
    return bounding_set() - {CAP_SYS_ADMIN}


def identity_map(path: str) -> str:
    """An id map for a child user namespace holding exactly the ids this process's namespace has,
    each as itself (inside a container with a user namespace of its own, that is less than 2^32-1)."""
    lines = []
    with open(path, "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3:
                lines.append(f"{int(fields[0])} {int(fields[0])} {int(fields[2])}")
    if not lines:
        raise OSError(f"{path} is empty")
    return "\n".join(lines)


def enter_user_namespace(*, network: bool = False) -> None:
    """Unshare a user and a mount namespace (and a network one) and get the identity id map.

    Runs in the monitor. The map is written by a helper forked *before* the
    unshare: it stays in the container's user namespace, where it has
    CAP_SETUID and CAP_SETGID, which a process cannot have over its own new
    namespace's parent. setgroups stays allowed, so the step can change groups.
    """
    uid_map = identity_map("/proc/self/uid_map")
    gid_map = identity_map("/proc/self/gid_map")
    me = os.getpid()
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:  # pragma: no cover - forked helper
        code = 1
        try:
            os.close(go_w)
            os.close(err_r)
            if os.read(go_r, 1) == b"u":
                write_proc_file(f"/proc/{me}/uid_map", uid_map)
                write_proc_file(f"/proc/{me}/gid_map", gid_map)
                code = 0
        except BaseException as exc:
            try:
                os.write(err_w, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:1000])
            except OSError:
                pass
        os._exit(code)
    os.close(go_r)
    os.close(err_w)
    try:
        flags = _linux.CLONE_NEWUSER | _linux.CLONE_NEWNS | (_linux.CLONE_NEWNET if network else 0)
        _linux.unshare(flags)
        os.write(go_w, b"u")
    finally:
        os.close(go_w)
        _, status = os.waitpid(helper, 0)
        with os.fdopen(err_r, "rb") as f:
            message = f.read().decode("utf-8", "replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(f"cannot write the id maps of the step's user namespace: {message or 'helper failed'}")
    # Nothing mounted for the step may propagate back into the container's namespace.
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)


def hide_dirs(dirs: Sequence[str]) -> None:
    """An empty read-only tmpfs over each directory (in the caller's mount namespace)."""
    for path in dirs:
        _linux.mount("tmpfs", path, "tmpfs", _HIDE_FLAGS, "mode=755,size=4k")


def hide_processes(keep: Iterable[int] = ()) -> int:
    """Cover /proc/PID of every process alive now (the step's own start later) with an empty
    read-only tmpfs; returns how many. A process that is gone by then is skipped."""
    skip = {str(p) for p in keep}
    count = 0
    try:
        names = os.listdir("/proc")
    except FileNotFoundError:
        return 0  # no /proc in this container: nothing of the other processes to see
    for name in names:
        if not name.isdigit() or name in skip:
            continue
        try:
            _linux.mount("tmpfs", f"/proc/{name}", "tmpfs", _HIDE_FLAGS, "mode=555,size=4k")
            count += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):  # it exited meanwhile
                continue
            raise
    return count


def setup_namespaces_mode(dirs: Sequence[str], extra_mounts) -> None:
    """Monitor, ``namespaces`` mode (mount namespace already private): extra mounts, then the hiding."""
    if extra_mounts is not None:
        extra_mounts()
    hide_dirs(dirs)


def setup_userns_mode(dirs: Sequence[str], extra_mounts, network: bool) -> None:
    """Monitor, ``userns`` mode: the namespaces, extra mounts (sources under the prefix are still
    reachable), then the prefix and the older processes' /proc entries."""
    enter_user_namespace(network=network)
    if extra_mounts is not None:
        extra_mounts()
    hide_dirs(dirs)
    hide_processes()


def _probe_namespaces(dirs: Sequence[str]) -> None:
    _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWPID)
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    hide_dirs(dirs)


def _probe_userns(dirs: Sequence[str]) -> None:
    enter_user_namespace()
    hide_dirs(dirs)
    hide_processes()


def choose_mode(dirs: Sequence[str], *, namespaces: bool) -> tuple[str, str]:
    """(mode, why) for hiding ``dirs``: tried for real in throwaway children, cheapest first."""
    failures = []
    if namespaces:
        failure = _linux.failure_in_child(lambda: _probe_namespaces(dirs))
        if failure is None:
            return "namespaces", "private mount namespace"
        failures.append(f"mount namespace: {failure}")
    else:
        failures.append("no CAP_SYS_ADMIN for a mount namespace")
    failure = _linux.failure_in_child(lambda: _probe_userns(dirs))
    if failure is None:
        return "userns", "user namespace with an identity map"
    failures.append(f"user namespace: {failure}")
    return "none", "; ".join(failures)


def warn_unhidden(dirs: Sequence[str], why: str) -> None:
    """Say once per process that RUN steps can read the prefix, and what to do about secrets."""
    global _warned
    if _warned:
        return
    _warned = True
    log.warning("RUN steps can read %s (registry credentials, the executor's files): no mount namespace can be "
                "made here (%s). Do not keep secrets there that the Dockerfile must not see; pass build secrets "
                "with --secret and RUN --mount=type=secret (docs/kaniko-mode.md). A user namespace would do: "
                "Docker --security-opt seccomp=unconfined, Kubernetes without a RuntimeDefault seccomp profile",
                ", ".join(dirs), why)
