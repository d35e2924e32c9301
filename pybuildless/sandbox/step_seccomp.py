"""The seccomp filter for RUN steps in chroot and userns isolation, or one line saying why there is none.

The program (Docker's default profile for the step's capabilities) is built
once per sandbox in the builder, never in a forked child; the command installs
it just before it changes user (see ``process._exec_command``). Installing a
filter without no_new_privs needs CAP_SYS_ADMIN (over the user namespace in
rootless mode); no_new_privs is never set, so setuid binaries in a step work.

When the filter cannot be had, one line per build says so: at warn level
what protection is missing, or at info level when the builder itself already
runs under a seccomp filter (a container's profile), which then applies to the
step as well.
"""

from __future__ import annotations

import logging

from pybuildless.sandbox import _linux, seccomp

log = logging.getLogger(__name__)

_said: set[str] = set()


def _status_fields() -> dict[str, str]:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _once(level: int, message: str, *args: object) -> None:
    if message not in _said:
        _said.add(message)
        log.log(level, message, *args)


def missing_reason() -> str | None:
    """Why a step cannot get a seccomp filter here, or None when it can."""
    reason = seccomp.unavailable_reason()
    if reason:
        return reason
    status = _status_fields()
    effective = int(status.get("CapEff", "0").strip() or "0", 16)
    # Under no_new_privs (set by whoever started the builder) the kernel loads a filter without the capability.
    if not effective >> _linux.CAP_SYS_ADMIN & 1 and status.get("NoNewPrivs", "0").strip() != "1":
        return "installing it needs CAP_SYS_ADMIN, which this process lacks"
    return None


def step_seccomp_program(capabilities: frozenset[int]) -> bytes | None:
    """Docker's default seccomp program for a step keeping ``capabilities``; None (said once) if unavailable."""
    reason = missing_reason()
    if reason is None:
        return seccomp.docker_default_program(capabilities=capabilities)
    if _status_fields().get("Seccomp", "0").strip() == "2":
        _once(logging.INFO, "RUN steps get no seccomp filter of their own (%s); the seccomp profile this "
              "builder runs under (its container's) applies to them", reason)
    else:
        _once(logging.WARNING, "RUN steps run without a seccomp filter (%s): system calls Docker's default "
              "profile blocks (keyctl, bpf, perf_event_open, unshare of user namespaces, open_by_handle_at, "
              "...) are left to the capability drop alone", reason)
    return None
