"""Whether unprivileged user namespaces work here, and if not, what blocks them.

The sysctls that switch them off are read first, so the error can name the
knob; then the real thing is tried in a throwaway child, where seccomp filters
and LSMs show up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pybuildless.sandbox import _linux


def _read_sysctl(path: Path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blockers(proc_sys: Path = Path("/proc/sys"), *, probe: bool = True) -> list[str]:
    """Why this process cannot use unprivileged user namespaces (empty when it can).

    The sysctls that switch them off are named first; if none does, ``probe``
    tries the real thing in a throwaway child (seccomp filters and LSMs show
    up only there).
    """
    reasons = []
    if _read_sysctl(proc_sys / "kernel/unprivileged_userns_clone") == "0":
        reasons.append("kernel.unprivileged_userns_clone is 0 (sysctl -w kernel.unprivileged_userns_clone=1)")
    if _read_sysctl(proc_sys / "user/max_user_namespaces") == "0":
        reasons.append("user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=15000)")
    if _read_sysctl(proc_sys / "kernel/apparmor_restrict_unprivileged_userns") == "1":
        reasons.append("AppArmor restricts unprivileged user namespaces "
                       "(kernel.apparmor_restrict_unprivileged_userns=1): set it to 0, or give the executor "
                       "an AppArmor profile that allows 'userns,'")
    if reasons or not probe:
        return reasons
    failure = _probe_userns()
    if failure:
        reasons.append(failure)
    return reasons


def _probe_userns() -> str | None:
    """Try, in a throwaway child, what the build will do: user+mount namespace, a map, a tmpfs mount."""
    uid, gid = os.getuid(), os.getgid()
    step = ["unshare(CLONE_NEWUSER|CLONE_NEWNS)"]

    def attempt() -> None:
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNS)
        step[0] = "writing the id maps"
        write_proc_file("/proc/self/setgroups", "deny")
        write_proc_file("/proc/self/uid_map", f"0 {uid} 1")
        write_proc_file("/proc/self/gid_map", f"0 {gid} 1")
        step[0] = "mounting in the new namespace"
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        _linux.mount("tmpfs", tempfile.gettempdir(), "tmpfs", 0, "size=4k")

    message = _linux.failure_in_child(attempt, describe=lambda exc: f"{step[0]} failed: {exc}", silent="")
    if message is None:
        return None
    hint = ""
    if "unshare" in message and ("Operation not permitted" in message or "EPERM" in message):
        hint = (" (a container's seccomp profile or a missing CAP_SYS_ADMIN in the container's own "
                "user namespace usually causes this; Docker: --security-opt seccomp=unconfined, or a "
                "profile allowing unshare/clone with CLONE_NEWUSER)")
    return f"unprivileged user namespaces do not work here: {message or 'unknown error'}{hint}"


def write_proc_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
