"""Rootless builds: re-execute the builder inside a user namespace where the invoking user is root.

The approach of ``buildah unshare``: at startup the builder forks a child that
unshares a user and a mount namespace; the parent (still outside) writes the
child's id maps, then the child re-executes the same command line. In there
the invoking user is uid 0 with every capability *over the namespace*, so the
chroot isolation (pivot_root, /proc, tmpfs, bind mounts, chown) works as it
does for real root, while the kernel keeps every access to the host within
what the user could do anyway.

Two id maps:

* **full** (``newuidmap``/``newgidmap`` and ``/etc/subuid`` + ``/etc/subgid``
  entries for the user): 0 → the user's own id, 1..N → the subordinate range.
  ``chown``, ``useradd`` and package managers work, layers keep their owners.
* **single** (no helpers or no entries): only the user's id, mapped to 0.
  Files owned by any other id cannot be created: images whose files are all
  root-owned build, ``chown`` to another id or ``USER 1000`` in a RUN fail
  with EINVAL.

Real root asking for ``userns`` gets an identity map of all ids: the same
file owners as the chroot isolation, with the step's capabilities confined to
a namespace.

The parent only waits: it forwards termination signals and exits with the
child's status, so a failing RUN's exit code is still the builder's.

Both the waiting parent and the re-executed builder are made non-dumpable
with their command lines blanked (``selfprotect``) once the maps are written:
where a step has to share the container's /proc (``procview``) it runs as the
same user outside the namespace and could otherwise read their environment
and files through /proc.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Sequence

from pybuildless.errors import SandboxError
from pybuildless.sandbox import _linux
from pybuildless.sandbox.selfprotect import protect_executor_process
from pybuildless.sandbox.userns_check import write_proc_file, userns_blockers

log = logging.getLogger(__name__)

# Set in the re-executed child's environment; its value is the map kind.
ENV_MARKER = "_PYBUILDLESS_USERNS"
MAP_KINDS = ("full", "single", "identity")

SUBUID_FILE = Path("/etc/subuid")
SUBGID_FILE = Path("/etc/subgid")
# The kernel accepts at most 340 lines per map (since 4.15); the rest is ignored.
_MAX_MAP_LINES = 340
_EXIT_SETUP_FAILED = 125


class UsernsUnavailableError(SandboxError):
    """Unprivileged user namespaces cannot be used here; the message says what blocks them."""


@dataclass(frozen=True)
class IdMap:
    """``count`` ids starting at ``inside`` in the namespace are ``outside``.. outside it."""

    inside: int
    outside: int
    count: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.count}"


@dataclass(frozen=True)
class UsernsPlan:
    """How to map ids into a new user namespace: directly or with newuidmap/newgidmap."""

    kind: str  # one of MAP_KINDS
    uid_maps: tuple[IdMap, ...]
    gid_maps: tuple[IdMap, ...]
    # newuidmap/newgidmap write the maps (setuid helpers) instead of the parent itself.
    use_helpers: bool

    def describe(self) -> str:
        uids = ", ".join(f"{m.inside}-{m.inside + m.count - 1}→{m.outside}" for m in self.uid_maps)
        gids = ", ".join(f"{m.inside}-{m.inside + m.count - 1}→{m.outside}" for m in self.gid_maps)
        return f"{self.kind} id map (uids {uids}; gids {gids})"


def subordinate_ranges(path: Path, name: str | None, ident: int) -> list[tuple[int, int]]:
    """The (start, count) ranges ``path`` (/etc/subuid format) grants to ``name`` or ``ident``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    keys = {str(ident)} | ({name} if name else set())
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in keys:
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append((start, count))
    return ranges


def _stacked(own: int, ranges: list[tuple[int, int]]) -> tuple[IdMap, ...]:
    """0 → own id, then the subordinate ranges one after the other from 1."""
    maps = [IdMap(0, own, 1)]
    inside = 1
    for start, count in ranges[:_MAX_MAP_LINES - 1]:
        maps.append(IdMap(inside, start, count))
        inside += count
    return tuple(maps)


def no_new_privs() -> bool:
    """Whether this process runs under no_new_privs: setuid bits and file capabilities of the
    programs it starts are ignored then (Kubernetes ``allowPrivilegeEscalation: false``, Docker
    ``--security-opt no-new-privileges``), so newuidmap/newgidmap cannot write the maps."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NoNewPrivs:"):
                    return line.split(":", 1)[1].strip() == "1"
    except OSError:
        pass
    return False


def plan_for(uid: int, gid: int, *, subuid: Path = SUBUID_FILE, subgid: Path = SUBGID_FILE) -> UsernsPlan:
    """The id maps a process with real ``uid``/``gid`` can get for its namespace."""
    if uid == 0:
        everything = (IdMap(0, 0, 4294967295),)
        return UsernsPlan("identity", everything, everything, use_helpers=False)
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None  # newuidmap needs a passwd entry to find the user's ranges
    installed = shutil.which("newuidmap") is not None and shutil.which("newgidmap") is not None
    nnp = installed and no_new_privs()
    helpers = installed and not nnp
    uid_ranges = subordinate_ranges(subuid, name, uid)
    gid_ranges = subordinate_ranges(subgid, name, uid)
    if helpers and name and uid_ranges and gid_ranges:
        return UsernsPlan("full", _stacked(uid, uid_ranges), _stacked(gid, gid_ranges), use_helpers=True)
    missing = []
    if not installed:
        missing.append("newuidmap/newgidmap (package uidmap)")
    elif nnp:
        missing.append("setuid newuidmap/newgidmap: no_new_privs is set (Kubernetes allowPrivilegeEscalation: "
                       "false, Docker --security-opt no-new-privileges)")
    if name is None:
        missing.append(f"a passwd entry for uid {uid}")
    if not uid_ranges:
        missing.append(f"an entry for {name or uid} in {subuid}")
    if not gid_ranges:
        missing.append(f"an entry for {name or uid} in {subgid}")
    log.warning("rootless build with a single id mapping (missing: %s): only uid/gid 0 exist in the build, "
                "so files owned by other users cannot be created (chown, useradd, USER in RUN fail)",
                "; ".join(missing))
    return UsernsPlan("single", (IdMap(0, uid, 1),), (IdMap(0, gid, 1),), use_helpers=False)


def in_reexecuted_namespace() -> bool:
    """Whether this process is the builder re-executed inside its user namespace."""
    return os.environ.get(ENV_MARKER) in MAP_KINDS and os.geteuid() == 0


def current_map_kind() -> str | None:
    """``full``, ``single`` or ``identity`` inside the re-executed builder; None elsewhere."""
    return os.environ.get(ENV_MARKER) if in_reexecuted_namespace() else None


def reexec_command() -> list[str]:
    """This process's command line, to be run again (the interpreter by absolute path)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = sys.executable
    return argv


def maybe_reexec(isolation: str, argv: Sequence[str] | None = None) -> str:
    """Resolve ``--isolation`` for this process; re-execute in a user namespace when needed.

    Returns the isolation to use here: ``chroot`` (root with ``auto``),
    ``userns`` (already inside the namespace), or ``isolation`` unchanged for
    the others. For ``userns``, and ``auto`` when not root, it does not
    return: it runs ``argv`` (default: this command line) inside a new user
    namespace and exits with its status. Call it once, early, before the
    build starts threads or touches files.
    """
    if in_reexecuted_namespace():
        if isolation not in ("auto", "userns"):
            raise SandboxError(f"--isolation={isolation} inside the rootless re-execution; expected userns")
        log.info("isolation: userns (inside the user namespace, %s id map)", current_map_kind())
        protect_executor_process()
        return "userns"
    if isolation == "auto":
        if os.geteuid() == 0:
            log.info("isolation: chroot (--isolation=auto, running as root)")
            return "chroot"
        blockers = userns_blockers()
        if blockers:
            raise UsernsUnavailableError(
                "--isolation=auto: not running as root, and rootless builds need unprivileged user "
                "namespaces: " + "; ".join(blockers) + ". Run as root, or use --isolation=inplace in a "
                "throwaway container")
        log.info("isolation: userns (--isolation=auto, not root and user namespaces work)")
    elif isolation == "userns":
        blockers = userns_blockers()
        if blockers:
            raise UsernsUnavailableError("--isolation=userns: " + "; ".join(blockers))
    else:
        return isolation
    plan = plan_for(os.getuid(), os.getgid())
    log.info("re-executing in a user namespace: %s", plan.describe())
    code = run_in_namespace(plan, list(argv) if argv is not None else reexec_command(), protect_parent=True)
    _exit_with(code)


def _exit_with(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def run_in_namespace(plan: UsernsPlan, argv: list[str], env: dict[str, str] | None = None, *,
                     protect_parent: bool = False) -> int:
    """Run ``argv`` as uid/gid 0 of a new user+mount namespace with ``plan``'s maps; its exit status.

    ``protect_parent``: once the maps are written (the direct write needs this process dumpable),
    make this process non-dumpable and blank its command line."""
    if not argv:
        raise SandboxError("nothing to run in the user namespace")
    child_env = dict(os.environ if env is None else env)
    child_env[ENV_MARKER] = plan.kind
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - forked child
        os.close(ready_r)
        os.close(go_w)
        os.close(err_r)
        _child(argv, child_env, ready_w, go_r, err_w)
    os.close(ready_w)
    os.close(go_r)
    os.close(err_w)
    try:
        if os.read(ready_r, 1) != b"u":
            _, status = os.waitpid(pid, 0)
            raise UsernsUnavailableError(f"cannot create the user namespace: {_read_all(err_r) or 'unknown error'}")
        try:
            write_maps(pid, plan)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        os.write(go_w, b"g")
    finally:
        os.close(ready_r)
        os.close(go_w)
    if protect_parent:
        protect_executor_process()
    return _wait_forwarding_signals(pid, err_r)


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks).decode("utf-8", "replace")
        chunks.append(chunk)


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# si_code of a signal the kernel raised itself: ^C, ^\ and hangups go to the whole
# foreground process group, the child included, so forwarding would double them.
_SI_KERNEL = 0x80


def _wait_forwarding_signals(pid: int, err_r: int) -> int:
    watched = set(_FORWARDED) | {signal.SIGCHLD}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 1 << 8
            if done:
                break
            info = signal.sigtimedwait(watched, 1.0)
            if info is None or info.si_signo == signal.SIGCHLD or info.si_code == _SI_KERNEL:
                continue
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    setup_error = _read_all(err_r)
    os.close(err_r)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    if setup_error:
        raise UsernsUnavailableError(f"cannot start the builder in the user namespace: {setup_error}")
    return code


def write_maps(pid: int, plan: UsernsPlan) -> None:
    """Write ``pid``'s uid and gid maps: with the setuid helpers, or directly (own id or real root)."""
    if plan.use_helpers:
        for tool, maps in (("newuidmap", plan.uid_maps), ("newgidmap", plan.gid_maps)):
            args = [tool, str(pid)] + [str(v) for m in maps for v in (m.inside, m.outside, m.count)]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise UsernsUnavailableError(
                    f"{tool} {pid} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}; "
                    f"check the entries in {SUBUID_FILE} and {SUBGID_FILE} and that {tool} is setuid root")
        return
    try:
        if plan.kind == "single":
            # Unprivileged gid maps need setgroups denied first (CVE-2014-8989).
            write_proc_file(f"/proc/{pid}/setgroups", "deny")
        write_proc_file(f"/proc/{pid}/uid_map", "\n".join(m.line() for m in plan.uid_maps))
        write_proc_file(f"/proc/{pid}/gid_map", "\n".join(m.line() for m in plan.gid_maps))
    except OSError as exc:
        raise UsernsUnavailableError(f"cannot write the id maps of the user namespace: {exc}") from None


def _child(argv: list[str], env: dict[str, str], ready_w: int, go_r: int, err_w: int) -> NoReturn:  # pragma: no cover
    try:
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNS)
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"g":
            os._exit(_EXIT_SETUP_FAILED)  # the parent failed to map us and reported it
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        try:
            os.setgroups([])  # the user's own supplementary groups are unmapped in here
        except PermissionError:
            pass  # setgroups is denied with a single mapping
        # Mounts made in here must never propagate to the mounts we were created from.
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        # A credential change cleared it; the builder must not outlive the waiting parent.
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        try:
            os.write(ready_w, b"x")
        except OSError:
            pass
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.errno == errno.EPERM and "unshare" in str(exc):
            message += " (unprivileged user namespaces are blocked)"
        try:
            os.write(err_w, message.encode("utf-8", "replace")[:2000])
        except OSError:
            pass
    os._exit(_EXIT_SETUP_FAILED)
