"""Fork/exec of one RUN command, so that nothing it starts outlives the step.

Process tree (the builder is the parent)::

    builder ── monitor (setsid, child subreaper, unshares namespaces, sets up mounts)
                 └─ init (pid 1 of a new pid namespace, when permitted; mounts /proc,
                      │    pivots into the stage root)
                      └─ command (chroot if not pivoted, chdir, capabilities, user, exec)

* With a pid namespace, ``init`` leaving makes the kernel SIGKILL everything
  else in the namespace, so ``RUN (sleep 1000 &)`` cannot leave a process.
  The command is not pid 1, so it gets ordinary signal semantics (``kill -9
  $$`` works) and zombies are reaped.
* Without one (no CAP_SYS_ADMIN), the command gets its own process group
  and the monitor is a child subreaper: after the command exits it SIGKILLs
  that group (all Kaniko does), every process of its session and every orphan
  re-parented to it, until it has no child left. Only a process that left
  both the group and the session *and* cannot be found because /proc is not
  mounted can survive; the monitor gives up on it after 5 s and the builder
  stops reading its output 2 s later.
* Mounts made by the monitor live in its private mount namespace and vanish
  with the last process in it; the host's mount table is never changed.
* What the step can learn about the builder: the monitor is outside the pid
  namespace; init, a fork of the builder, closes every file descriptor,
  renames itself ``init`` and wipes its argv and environment memory, so
  /proc/1/cmdline and /proc/1/comm read ``init``; it and the command before
  exec are not dumpable, so /proc/1/environ, fd links, exe, root and mem are
  refused to a step without CAP_SYS_PTRACE. The command keeps only
  stdin/stdout/stderr and gets only the step's environment.

stdout and stderr are merged into one pipe, like ``docker build`` prints
them. The parent reads it until the monitor is gone.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pybuildless.errors import BuildError, SandboxError
from pybuildless.sandbox import _linux
from pybuildless.sandbox.mountplan import MountStep, proc_steps, run_steps
from pybuildless.sandbox.pid1 import MAX_FD, close_all_but, disguise_as_init
from pybuildless.sandbox.seccomp import install as install_seccomp

if TYPE_CHECKING:
    from pybuildless.fs.users import ResolvedUser

log = logging.getLogger(__name__)

OutputSink = Callable[[bytes], None]

# Exit statuses the shell convention reserves; used when exec itself fails.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
# The monitor or init failed before exec; the message on the error pipe says why.
_EXIT_SETUP_FAILED = 125


class CommandNotFoundError(BuildError):
    """The RUN's executable could not be executed (exec-form RUN with a bad path)."""


@dataclass(frozen=True)
class ChildSpec:
    """Everything the sandbox's child needs to set itself up and exec the command."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    user: "ResolvedUser"
    chroot: str | None = None
    unshare_flags: int = 0
    # Runs in the monitor after unshare (mount namespace already private).
    setup_mounts: Callable[[], None] | None = None
    # Host path where init mounts a fresh procfs (needs the new pid namespace).
    proc_mountpoint: str | None = None
    loopback_up: bool = False
    hostname: str | None = None
    # init pivots into ``chroot`` (made a mount point by setup_mounts) instead
    # of chroot(2), so the host's tree is detached and cannot be climbed back to.
    pivot_root: bool = False
    # Capabilities the command keeps (None: leave them alone).
    capabilities: frozenset[int] | None = None
    last_capability: int = 40
    # Mask and make read-only the host-global parts of the fresh /proc (Docker's default view).
    protect_proc: bool = False
    # A seccomp filter the command installs before it changes user (None: no filter).
    seccomp_program: bytes | None = None
    # What init mounts on ``proc_mountpoint``: set by run_child from the two fields above, so
    # the forked init only executes steps the builder decided (mountplan.proc_steps).
    proc_steps: tuple[MountStep, ...] = ()


def run_child(spec: ChildSpec, sink: OutputSink) -> int:
    """Run the command; return its exit status (128+n when killed by signal n)."""
    spec = dataclasses.replace(spec, proc_steps=proc_steps(spec.proc_mountpoint, protect=spec.protect_proc)
                               if spec.proc_mountpoint else ())
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        os.close(out_r)
        os.close(err_r)
        _monitor(spec, parent_pid, out_w, err_w, devnull)
    os.close(out_w)
    os.close(err_w)
    os.close(devnull)
    try:
        status = _pump(pid, out_r, sink)
    except BaseException:
        _kill_monitor(pid)
        raise
    finally:
        os.close(out_r)
    report = _read_all(err_r)
    os.close(err_r)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    if report:
        _raise_report(report, spec, code)
    return code


def _kill_monitor(pid: int) -> None:
    # The monitor is a session leader: its process group holds everything that
    # did not move away; init and the command also die via PDEATHSIG.
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _pump(pid: int, out_r: int, sink: OutputSink) -> int:
    """Copy output to the sink until the monitor exits and the pipe drains."""
    status: int | None = None
    deadline: float | None = None
    while True:
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                # Everything that held the pipe is dead by now; the deadline only
                # guards against a writer we could not kill.
                deadline = time.monotonic() + 2.0
        timeout = 0.05 if status is None else max(0.0, deadline - time.monotonic())  # type: ignore[operator]
        ready, _, _ = select.select([out_r], [], [], timeout)
        if ready:
            chunk = os.read(out_r, 65536)
            if not chunk:
                if status is None:
                    _, status = os.waitpid(pid, 0)
                return status
            sink(chunk)
        elif status is not None:
            log.warning("RUN output pipe still open after the step ended; closing it")
            return status


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _raise_report(report: bytes, spec: ChildSpec, code: int) -> None:
    kind, _, rest = report.decode("utf-8", "replace").partition("\0")
    if kind == "exec":
        err_text, _, message = rest.partition("\0")
        err = int(err_text) if err_text.isdigit() else 0
        status = EXIT_NOT_EXECUTABLE if err in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else EXIT_NOT_FOUND
        raise CommandNotFoundError(f"RUN {list(spec.argv)}: cannot execute {spec.argv[0]!r}: {message}",
                                   exit_code=status)
    raise SandboxError(f"RUN sandbox setup failed: {rest or kind}")


# --- everything below runs in forked children and must end in os._exit ---


def _report(err_w: int, kind: str, message: str) -> None:
    try:
        os.write(err_w, f"{kind}\0{message}".encode("utf-8", "replace")[:4000])
    except OSError:
        pass


def _monitor(spec: ChildSpec, parent_pid: int, out_w: int, err_w: int, devnull: int) -> None:  # pragma: no cover
    code = _EXIT_SETUP_FAILED
    try:
        os.setsid()
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(code)
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
        # The monitor and init are copies of the builder, credentials included:
        # keep the step from reading their memory through /proc/PID/mem.
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        if spec.unshare_flags:
            _linux.unshare(spec.unshare_flags)
        if spec.unshare_flags & _linux.CLONE_NEWNS:
            # Nothing we mount may propagate back to the host's namespace.
            try:
                _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
            except OSError as exc:
                # EINVAL: our / is not a mount point (the builder itself runs in a
                # bare chroot). Mounting anything now could propagate, so don't.
                if spec.setup_mounts is not None:
                    raise OSError(exc.errno, f"cannot make mounts private ({exc.strerror}); "
                                  "is the builder's / a mount point?") from None
                spec = dataclasses.replace(spec, proc_mountpoint=None, proc_steps=())
        if spec.setup_mounts is not None:
            spec.setup_mounts()
        if spec.loopback_up:
            _linux.bring_up_loopback()
        if spec.hostname and spec.unshare_flags & _linux.CLONE_NEWUTS:
            _linux.sethostname(spec.hostname)
        in_pid_ns = bool(spec.unshare_flags & _linux.CLONE_NEWPID)
        child = os.fork()
        if child == 0:
            if in_pid_ns:
                _init(spec, out_w, err_w, devnull)
            _exec_command(spec, out_w, err_w, devnull)
        os.close(out_w)
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        _reap_everything(None if in_pid_ns else child)
    except BaseException as exc:
        _report(err_w, "setup", f"{type(exc).__name__}: {exc}")
    finally:
        os._exit(code)


def _reap_everything(command_pgid: int | None) -> None:  # pragma: no cover - monitor only
    """Kill and reap every process the step left behind.

    The command's process group first (what Kaniko does), then anything in
    our session or re-parented to us. If /proc is unavailable and a process
    escaped both, give up after a few seconds rather than hang the build.
    """
    me = os.getpid()
    sid = os.getsid(0)
    idle_since = time.monotonic()
    while True:
        victims = _descendant_candidates(me, sid)
        if command_pgid is not None:
            victims.append(-command_pgid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 5.0:
            return
        else:
            time.sleep(0.01)


def _descendant_candidates(me: int, sid: int) -> list[int]:  # pragma: no cover - monitor only
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # Fields after the ")" closing comm: state ppid pgrp session ...
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) >= 4 and (int(fields[1]) == me or int(fields[3]) == sid):
            found.append(int(name))
    return found


def _init(spec: ChildSpec, out_w: int, err_w: int, devnull: int) -> None:  # pragma: no cover
    """pid 1 of the namespace: mount /proc, start the command, reap until it exits."""
    code = _EXIT_SETUP_FAILED
    try:
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        run_steps(spec.proc_steps)
        disguise_as_init(devnull, out_w, err_w, proc=spec.proc_mountpoint)
        if spec.pivot_root and spec.chroot is not None:
            # A nested mount namespace, so the pivot does not move the monitor's root.
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.pivot_into(spec.chroot)
            spec = dataclasses.replace(spec, chroot=None)
        command = os.fork()
        if command == 0:
            _exec_command(spec, out_w, err_w, devnull)
        # From here on init holds no file at all: /proc/1/fd is empty.
        os.closerange(0, MAX_FD)
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == command:
                code = os.waitstatus_to_exitcode(status)
                if code < 0:
                    code = 128 - code
                break
    except BaseException as exc:
        _report(err_w, "setup", f"{type(exc).__name__}: {exc}")
    finally:
        os._exit(code)


def _exec_command(spec: ChildSpec, out_w: int, err_w: int, devnull: int) -> None:  # pragma: no cover
    stage = "setup"
    try:
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        # Own process group, so the monitor can kill the group like Kaniko does.
        os.setpgid(0, 0)
        if spec.chroot is not None:
            os.chroot(spec.chroot)
            os.chdir("/")
        try:
            os.chdir(spec.cwd or "/")
        except OSError:
            # WORKDIR is used only if it exists (Kaniko); the executor creates it.
            os.chdir("/")
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        # Nothing of the builder's open files reaches the step (err_w is close-on-exec).
        close_all_but(err_w, first=3)
        if spec.capabilities is not None:
            _linux.limit_capabilities(spec.capabilities, spec.last_capability)
        if spec.seccomp_program is not None:
            # Before the user change: without no_new_privs (setuid binaries in the step must keep
            # working) installing a filter needs CAP_SYS_ADMIN, which setuid to a non-root user drops.
            install_seccomp(spec.seccomp_program)
        _become(spec.user)
        # PDEATHSIG is cleared by a credential change: set it again.
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        # Python ignores SIGPIPE and SIGXFSZ; a shell pipeline expects defaults.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        stage = "exec"
        os.execvpe(spec.argv[0], list(spec.argv), spec.env)
    except BaseException as exc:
        if stage == "exec" and isinstance(exc, OSError):
            _report(err_w, "exec", f"{exc.errno}\0{exc.strerror}")
            os._exit(EXIT_NOT_FOUND)
        _report(err_w, "setup", f"{type(exc).__name__}: {exc}")
    os._exit(_EXIT_SETUP_FAILED)


def _setgroups_denied() -> bool:  # pragma: no cover - command child only
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() == b"deny"
    except OSError:
        return False


def _become(user: "ResolvedUser") -> None:  # pragma: no cover - command child only
    """Switch to the step's user; explain the failures a single-id user namespace causes."""
    try:
        os.setgroups(list(user.supplementary_gids))
    except PermissionError:
        # A user namespace with a single id mapping denies setgroups; there are no
        # other groups to drop or add in there anyway.
        if not _setgroups_denied():
            raise
    for kind, ident, switch in (("gid", user.gid, os.setgid), ("uid", user.uid, os.setuid)):
        try:
            switch(ident)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise OSError(exc.errno, f"{kind} {ident} is not mapped in this user namespace (rootless build "
                          "without /etc/subuid and /etc/subgid ranges for this user: only 0 exists)") from None
