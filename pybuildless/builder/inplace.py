"""In-place (Kaniko) mode: the build root is the executor container's own ``/``.

Only ever where that root is disposable: the executor image selects it through
its environment (``PYBUILDLESS_ISOLATION=inplace``), or ``--isolation=inplace``
together with a detected container, or ``--force``. The ignore list (the
executor's prefix, /proc, /sys, /dev, every mount point, /var/run,
``--ignore-path``) is never extracted into, snapshotted or removed.

Once in-place mode is allowed, the executor's process is made non-dumpable and
its command line blanked (``sandbox.selfprotect``): RUN steps may share its pid
namespace, and must not read its environment or flags through /proc.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pybuildless.errors import UsageError
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.secure import remove_in_dir
from pybuildless.sandbox.selfprotect import protect_executor_process

log = logging.getLogger(__name__)

ENV_SELECT = "PYBUILDLESS_ISOLATION"


def detect_container() -> str | None:
    """Why we believe this process runs in a container (Kaniko's checks), or None."""
    if os.path.exists("/.dockerenv"):
        return "/.dockerenv exists"
    if os.path.exists("/run/.containerenv"):
        return "/run/.containerenv exists"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "KUBERNETES_SERVICE_HOST is set"
    if os.environ.get("container"):
        return f"container={os.environ['container']}"
    try:
        cgroup = Path("/proc/1/cgroup").read_text()
    except OSError:
        cgroup = ""
    for marker in ("docker", "kubepods", "containerd", "libpod", "lxc"):
        if marker in cgroup:
            return f"/proc/1/cgroup mentions {marker}"
    return None


def check_allowed(*, explicit_env: bool, force: bool) -> None:
    """Refuse to build on / unless it was selected on purpose and is disposable; then, before
    the first step, keep the executor's own process out of the steps' reach."""
    _check_disposable(explicit_env=explicit_env, force=force)
    protect_executor_process()


def _check_disposable(*, explicit_env: bool, force: bool) -> None:
    if force:
        return
    if not explicit_env:
        reason = detect_container()
        if reason is None:
            raise UsageError(
                "--isolation=inplace extracts images onto this machine's / and deletes files there; "
                "no container was detected, so refusing (add --force only inside a disposable container)")
        log.info("in-place build: %s", reason)


def ignore_list(kaniko_dir: Path, *, ignore_var_run: bool, extra: tuple[str, ...]) -> IgnoreList:
    env_extra = tuple(p for p in os.environ.get("PYBUILDLESS_IGNORE_PATHS", "").split(":") if p)
    return IgnoreList.for_in_place(str(kaniko_dir), ignore_var_run=ignore_var_run, extra=extra + env_extra)


def wipe_root(root: Path, ignore: IgnoreList) -> None:
    """Remove everything below ``root`` that the ignore list does not protect."""

    def keep(rel: str) -> str | None:
        path = "/" + rel.lstrip("/")
        if ignore.is_ignored(path):
            return "keep"
        if ignore.contains_ignored(path):
            return "descend"
        return None

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            remove_in_dir(fd, name, keep=keep)
        _prune_empty_parents(fd, "", keep)
    finally:
        os.close(fd)


def _prune_empty_parents(dir_fd: int, rel: str, keep) -> None:
    """Remove directories that were kept only because an ignored path *might* be below
    them (``/etc`` for ``/etc/mtab``, ``/var`` for ``/var/run``) and turned out empty."""
    for name in os.listdir(dir_fd):
        child = f"{rel}/{name}"
        if keep(child) != "descend":
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            _prune_empty_parents(sub, child, keep)
        finally:
            os.close(sub)
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError:
            pass  # not empty: something protected lives below
