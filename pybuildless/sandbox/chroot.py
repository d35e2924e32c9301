"""ChrootSandbox: RUN confined to the stage root, in private namespaces when permitted.

Needs root. With CAP_SYS_ADMIN (the normal case on a build machine) the step
gets mount, pid, IPC and UTS namespaces (and a network namespace for
``--network=none``); the stage root is bind-mounted onto itself and becomes
the namespace's root by pivot_root, with the host's tree detached, so even
root in the step cannot climb out the way it can out of a chroot. /proc,
/dev, /sys and the /etc files are mounted for the step only, every process
the step started dies with it, and the command keeps only Docker's default
capabilities minus CAP_MKNOD (no device cgroup here to make device nodes
harmless) — so no mounting, no raw devices. The step sees the kernel as a
Docker container does: runc's masked and read-only /proc and /sys paths
(``mountplan.proc_protection``, ``mountplan.SYS_MASKED_PATHS``), /sys read-only, and a
seccomp filter equivalent to Docker's default profile (``step_seccomp``) where
the kernel and this process's capabilities allow one. Pid 1 is an init that
shows nothing of the builder (see ``process``).

Without CAP_SYS_ADMIN (an unprivileged container) it falls back to a plain
chroot(2): minimal device nodes are created with mknod when missing (and
removed after the step), there is no /proc or /sys, daemons are still killed
through the monitor's process-group/session/subreaper sweep, ``--network=none``
and extra mounts are refused, and CAP_SYS_CHROOT is dropped too so the step
cannot use the classic double-chroot escape.

``overlay=True`` runs each step on an overlay mount over the root (see
``pybuildless.fs.overlay``) when the probe says overlay mounts are allowed:
the step's changes are read from the upper dir (the ``changes`` of the
``RunResult`` that ``run`` returns) and moved onto the root before ``run``
returns, so the root is always the truth. A caller whose root can show the
upper dir without copying it (a stage root that is itself an overlay stacks it
as a lower dir) passes ``keep_upper``, and the dir is offered there first. Where overlay mounts are refused,
``run`` writes straight into the root and its result carries no changes: the
caller walks the root instead.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pybuildless.errors import SandboxError
from pybuildless.fs.changes import Changes
from pybuildless.fs.mountinfo import mounts_below
from pybuildless.fs.overlay import apply_upper, overlay_changes
from pybuildless.sandbox import _linux, procview
from pybuildless.sandbox.base import RunResult, Sink, UpperKeeper, as_sink, check_run_args, probe_namespaces
from pybuildless.sandbox.extra_mounts import Mount, PreparedMount, apply_extra_mounts, prepare_extra_mounts
from pybuildless.sandbox.materialize import put_in_place, take_away
from pybuildless.sandbox.mounts import MountPlan, apply_mounts, prepare_fallback, prepare_mounts, remove_scratch
from pybuildless.sandbox.overlay_mount import OverlayDirs, OverlaySupport, mount_overlay
from pybuildless.sandbox.process import ChildSpec, run_child
from pybuildless.sandbox.step_seccomp import step_seccomp_program

if TYPE_CHECKING:
    from pybuildless.fs.users import ResolvedUser

log = logging.getLogger(__name__)

_BASE_NAMESPACES = _linux.CLONE_NEWNS | _linux.CLONE_NEWPID | _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS


def _mount_all(plan: MountPlan, extra: list[PreparedMount], overlay: OverlayDirs | None = None,
               userxattr: bool = False, container_proc: bool = False) -> None:
    if overlay is not None:
        # first, so /proc, /dev and the RUN --mount targets are mounted on the merged view
        mount_overlay(str(plan.root), str(overlay.upper), str(overlay.work), userxattr=userxattr)
    # The root must be a mount point for pivot_root; the mounts below go on top of this one.
    _linux.mount(str(plan.root), plan.root, None, _linux.MS_BIND | _linux.MS_REC)
    apply_mounts(plan)
    apply_extra_mounts(extra)
    if container_proc:
        procview.enter_stage_root(plan.root, plan.targets.get("proc"))


class ChrootSandbox:
    def __init__(self, root: Path, *, namespaces: bool | None = None, hostname: str | None = None,
                 scratch_parent: Path | None = None, overlay: bool = False) -> None:
        """``namespaces``: None probes, False forces the plain-chroot fallback.

        ``overlay``: run steps on an overlay mount when this process may mount one.
        """
        self.root = Path(os.path.abspath(root))
        if not self.root.is_dir():
            raise SandboxError(f"RUN root {self.root} is not a directory")
        if os.geteuid() != 0:
            raise SandboxError("chroot isolation needs root (euid 0); rootless builds need --isolation=userns")
        self.namespaces = probe_namespaces(_BASE_NAMESPACES) if namespaces is None else namespaces
        # A fresh /proc refused (rootless in a container): the container's, no pid namespace (procview).
        self._container_proc = self.namespaces and _linux.pivot_available() and procview.use_container_proc()
        self.hostname = hostname
        # Copies of the host's /etc/hosts and /etc/resolv.conf live here, outside the root.
        self._scratch = Path(tempfile.mkdtemp(prefix="pybuildless-sandbox-", dir=scratch_parent))
        # Removed on close(), or at garbage collection / interpreter exit if close() is forgotten.
        self._remove_scratch = weakref.finalize(self, remove_scratch, self._scratch)
        self._closed = False
        self._last_cap = _linux.last_capability()
        # Without namespaces the step is only chrooted: CAP_SYS_CHROOT would let it climb out.
        self._capabilities = _linux.RUN_CAPABILITIES if self.namespaces \
            else _linux.RUN_CAPABILITIES - {_linux.CAP_SYS_CHROOT}
        # Built once here, installed by each step's command before it changes user.
        self._seccomp_program = step_seccomp_program(self._capabilities)
        self._overlay = self._probe_overlay() if overlay else None
        self._overlay_changes: Changes | None = None
        self.overlay_seconds = 0.0  # reading and applying the last step's upper dir

    def _probe_overlay(self) -> OverlaySupport | None:
        if not self.namespaces:
            log.info("overlay snapshots off: no mount namespace here; snapshots walk the root")
            return None
        support = OverlaySupport.probe(self.root.parent, self.root)
        if not support.usable:
            log.info("overlay snapshots off: overlay mounts are refused here (%s); snapshots walk the root",
                     support.reason)
            return None
        log.debug("RUN steps run on overlay mounts (userxattr=%s)", support.userxattr)
        return support

    @property
    def overlay(self) -> bool:
        """Whether steps run on an overlay mount (asked for, and the probe allowed it)."""
        return self._overlay is not None

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
            stdout: Sink, network: str = "default", mounts: Sequence[Mount] = (),
            keep_upper: UpperKeeper | None = None) -> RunResult:
        if self._closed:
            raise SandboxError("sandbox already closed")
        check_run_args(argv, env, network)
        flags = _BASE_NAMESPACES if self.namespaces else 0
        if self._container_proc:
            flags &= ~_linux.CLONE_NEWPID
        if network == "none":
            if not self.namespaces or not probe_namespaces(_linux.CLONE_NEWNET):
                raise SandboxError("RUN --network=none needs a network namespace, which cannot be created here")
            flags |= _linux.CLONE_NEWNET
        self._overlay_changes = None
        self._upper_kept = False
        before = set(mounts_below(self.root))
        dirs = OverlayDirs.create(self.root.parent) if self._overlay is not None else None
        if self.namespaces:
            plan = prepare_mounts(self.root, self._scratch)
        else:
            plan = prepare_fallback(self.root, self._scratch)
        # Without a mount namespace RUN --mount is imitated with copies (sandbox.materialize).
        copied: list[PreparedMount] = []
        try:
            extra = prepare_extra_mounts(self.root, mounts, plan.created)
            if extra and not self.namespaces:
                put_in_place(extra, plan.created, copied)
            spec = ChildSpec(
                argv=tuple(argv),
                env=dict(env),
                cwd=cwd,
                user=user,
                chroot=None if self._container_proc else str(self.root),  # the monitor pivots there itself
                unshare_flags=flags,
                setup_mounts=functools.partial(_mount_all, plan, extra, dirs,
                                               self._overlay is not None and self._overlay.userxattr,
                                               self._container_proc)
                if self.namespaces else None,
                proc_mountpoint=str(plan.targets["proc"]) if "proc" in plan.targets and not self._container_proc
                else None,
                loopback_up=network == "none",
                hostname=self.hostname,
                pivot_root=self.namespaces and _linux.pivot_available() and not self._container_proc,
                capabilities=self._capabilities,
                last_capability=self._last_cap,
                protect_proc=True,
                seccomp_program=self._seccomp_program,
            )
            code = run_child(spec, as_sink(stdout))
            if dirs is not None:
                # read before the cleanup below changes the lower dirs' metadata
                started = time.perf_counter()
                self._overlay_changes = overlay_changes(dirs.upper, lower=self.root)
                self.overlay_seconds = time.perf_counter() - started
        finally:
            try:
                take_away(copied)
            finally:
                plan.cleanup()
            if dirs is not None:
                try:
                    if self._overlay_changes is not None:
                        self._upper_kept = self._absorb(dirs, keep_upper)
                except OSError as exc:
                    self._overlay_changes = None
                    raise SandboxError(f"cannot move the RUN step's overlay changes onto {self.root}: {exc}") from exc
                finally:
                    dirs.remove()
            left = sorted(set(mounts_below(self.root)) - before)
            if left:
                # Cannot happen with a private namespace; refuse to snapshot over mounts.
                raise SandboxError(f"mounts left under {self.root} after RUN: {', '.join(left)}")
        return RunResult(code, changes=self._overlay_changes, upper_kept=self._upper_kept)

    def _absorb(self, dirs: OverlayDirs, keep_upper: UpperKeeper | None) -> bool:
        """Make the root show the step's upper dir: taken by ``keep_upper``, else moved onto it."""
        assert self._overlay_changes is not None
        read = self.overlay_seconds
        started = time.perf_counter()
        if keep_upper is not None and keep_upper(dirs.upper, self._overlay_changes):
            how, entries = "stacked", len(self._overlay_changes.paths) + len(self._overlay_changes.deleted)
        else:
            how, entries = "applied", apply_upper(dirs.upper, self.root)
        spent = time.perf_counter() - started
        self.overlay_seconds += spent
        log.debug("overlay upper dir: %d entries read in %.1f ms and %s in %.1f ms", entries, read * 1000, how,
                  spent * 1000)
        return how == "stacked"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._remove_scratch()

    def __enter__(self) -> "ChrootSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
