"""What pid 1 of a step's pid namespace shows of the builder it was forked from: nothing.

init is a fork of the builder (no exec: a fresh interpreter would cost tens of
milliseconds per step), so until it hides them its memory, argv, environment
and open files are the builder's. ``disguise_as_init`` runs first thing in
init; /proc/1/mem, environ, fd links, exe and root are refused to the step
anyway because init is not dumpable and the step lacks CAP_SYS_PTRACE, but
/proc/1/cmdline and comm are readable by anyone, and /proc/1/fd can be listed
by root.
"""

from __future__ import annotations

import ctypes
import os

from pybuildless.sandbox import _linux

MAX_FD = 1 << 30  # above any RLIMIT_NOFILE; os.closerange uses close_range(2)


def close_all_but(*keep: int, first: int = 0) -> None:
    # os.closerange(lo, hi) with hi <= lo would pass an inverted range to close_range(2): guard it.
    low = first
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, MAX_FD)


def disguise_as_init(devnull: int, *keep: int, proc: str | None = None) -> None:
    """Make pid 1 show nothing of the builder it was forked from.

    ``devnull`` (open on /dev/null) and ``keep`` stay open; ``proc`` is the
    procfs the step will see, already mounted (None: the step gets none, and
    the builder's /proc is used if there is one).

    Its stdio goes to /dev/null and every other descriptor of the builder is
    closed; comm becomes "init"; the argv and environment strings the kernel
    reads /proc/1/cmdline from are wiped and "init" written in their place.
    The last byte of the argv area is left non-zero, the setproctitle
    convention, so that the kernel stops at the first NUL and cmdline reads
    exactly "init" instead of "init" and a run of NULs.
    """
    for fd in (0, 1, 2):
        if fd not in keep and fd != devnull:
            os.dup2(devnull, fd)
    close_all_but(0, 1, 2, devnull, *keep)
    _linux.set_process_name(b"init")
    try:
        areas = _argv_env_areas(os.path.join(proc or "/proc", "self/stat"))
    except OSError:
        if proc is not None:
            raise
        areas = None  # no /proc anywhere: nothing reads this process's argv
    if areas is None:
        return
    (arg_start, arg_end), (env_start, env_end) = areas
    if env_end > env_start:
        ctypes.memset(env_start, 0, env_end - env_start)
    size = arg_end - arg_start
    if size <= 0:
        return
    ctypes.memset(arg_start, 0, size)
    title = b"init\0"[:size]
    ctypes.memmove(arg_start, title, len(title))
    if size > len(title):
        ctypes.memset(arg_end - 1, 0x20, 1)


def _argv_env_areas(stat_path: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    fd = os.open(stat_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    # Fields after the ")" closing comm start at field 3 (state); 48-51 are arg_start, arg_end, env_start, env_end.
    fields = data[data.rfind(b")") + 2:].split()
    if len(fields) < 49:
        return None
    arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    if not arg_start or arg_end < arg_start or env_end < env_start:
        return None
    return (arg_start, arg_end), (env_start, env_end)
