"""What a RUN step can learn about the executor through /proc when it shares its pid namespace.

In Kaniko mode without a pid namespace for the step, and in a rootless
container where /proc has to be the container's, the step sees the executor's
processes. ``protect_executor_process``:

* makes the process non-dumpable: /proc/PID/environ (which may carry
  ``DOCKER_AUTH_CONFIG`` or ``--secret ...,env=`` values), fd, root, cwd, mem
  and maps then need CAP_SYS_PTRACE over the executor's user namespace, which
  a step does not have (proc(5), "ptrace access mode checking");
* blanks its command line (/proc/PID/cmdline is readable by anyone and may
  hold ``--build-arg TOKEN=...``): the kernel reads it from the argv strings
  the process was started with, which the interpreter has already copied, so
  they can be overwritten with the program name alone.

The environment strings are left alone: C code (OpenSSL's ``SSL_CERT_FILE``
lookup) still reads them through ``getenv``; non-dumpable already hides them.
"""

from __future__ import annotations

import ctypes
import logging

from pybuildless.sandbox import _linux

log = logging.getLogger(__name__)


def protect_executor_process() -> None:
    """Non-dumpable, and /proc/self/cmdline reduced to the program path. Idempotent."""
    _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
    try:
        blank_command_line()
    except (OSError, ValueError) as exc:
        log.debug("cannot blank the command line: %s", exc)


def _argv_area() -> tuple[int, int] | None:
    with open("/proc/self/stat", "rb") as f:
        data = f.read()
    # proc(5): after the ")" closing comm, fields start at 3 (state); 48 and 49 are arg_start, arg_end.
    fields = data[data.rfind(b")") + 2:].split()
    if len(fields) < 47:
        return None
    start, end = int(fields[45]), int(fields[46])
    if not start or end <= start:
        return None
    return start, end


def blank_command_line() -> None:
    area = _argv_area()
    if area is None:
        return
    start, end = area
    size = end - start
    current = ctypes.string_at(start, size)
    first = current.split(b"\0", 1)[0]
    if current == first + b"\0":
        return  # a single argument: nothing to hide
    title = first[:size - 1] + b"\0"
    ctypes.memset(start, 0, size)
    ctypes.memmove(start, title, len(title))
    if size > len(title):
        # The kernel stops at the first NUL only when the area's last byte is not NUL
        # (the setproctitle convention, fs/proc/base.c get_mm_cmdline); otherwise it
        # would return the whole area, a run of NULs included.
        ctypes.memset(end - 1, 0x20, 1)
