"""ChrootSandbox: RUN confined to the stage root, in private namespaces when permitted.

Needs root. With CAP_SYS_ADMIN (the normal case on a build machine) the step
gets mount, pid, IPC and UTS namespaces (and a network namespace for
``--network=none``); the stage root is bind-mounted onto itself and becomes
the namespace's root by pivot_root, with the host's tree detached, so even
root in the step cannot climb out the way it can out of a chroot. /proc,
/dev, /sys and the /etc files are mounted for the step only, every process
the step started dies with it, and the command keeps only Docker's default
capabilities minus CAP_MKNOD (no device cgroup here to make device nodes
harmless) — so no mounting, no raw devices.

Without CAP_SYS_ADMIN (an unprivileged container) it falls back to a plain
chroot(2): minimal device nodes are created with mknod when missing (and
removed after the step), there is no /proc or /sys, daemons are still killed
through the monitor's process-group/session/subreaper sweep, ``--network=none``
and extra mounts are refused, and CAP_SYS_CHROOT is dropped too so the step
cannot use the classic double-chroot escape.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pybuildless.errors import SandboxError
from pybuildless.sandbox import _linux
from pybuildless.sandbox.base import Sink, as_sink, check_run_args, mounts_below, probe_namespaces
from pybuildless.sandbox.extra_mounts import Mount, PreparedMount, apply_extra_mounts, prepare_extra_mounts
from pybuildless.sandbox.mounts import MountPlan, apply_mounts, prepare_fallback, prepare_mounts, remove_scratch
from pybuildless.sandbox.process import ChildSpec, run_child

if TYPE_CHECKING:
    from pybuildless.fs.users import ResolvedUser

log = logging.getLogger(__name__)

_BASE_NAMESPACES = _linux.CLONE_NEWNS | _linux.CLONE_NEWPID | _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS


def _mount_all(plan: MountPlan, extra: list[PreparedMount]) -> None:
    # The root must be a mount point for pivot_root; the mounts below go on top of this one.
    _linux.mount(str(plan.root), plan.root, None, _linux.MS_BIND | _linux.MS_REC)
    apply_mounts(plan)
    apply_extra_mounts(extra)


class ChrootSandbox:
    def __init__(self, root: Path, *, namespaces: bool | None = None, hostname: str | None = None,
                 scratch_parent: Path | None = None) -> None:
        """``namespaces``: None probes, False forces the plain-chroot fallback."""
        self.root = Path(os.path.abspath(root))
        if not self.root.is_dir():
            raise SandboxError(f"RUN root {self.root} is not a directory")
        if os.geteuid() != 0:
            raise SandboxError("chroot isolation needs root (euid 0); rootless builds need --isolation=userns")
        self.namespaces = probe_namespaces(_BASE_NAMESPACES) if namespaces is None else namespaces
        self.hostname = hostname
        # Copies of the host's /etc/hosts and /etc/resolv.conf live here, outside the root.
        self._scratch = Path(tempfile.mkdtemp(prefix="pybuildless-sandbox-", dir=scratch_parent))
        # Removed on close(), or at garbage collection / interpreter exit if close() is forgotten.
        self._remove_scratch = weakref.finalize(self, remove_scratch, self._scratch)
        self._closed = False
        self._last_cap = _linux.last_capability()

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
            stdout: Sink, network: str = "default", mounts: Sequence[Mount] = ()) -> int:
        if self._closed:
            raise SandboxError("sandbox already closed")
        check_run_args(argv, env, network)
        flags = _BASE_NAMESPACES if self.namespaces else 0
        if network == "none":
            if not self.namespaces or not probe_namespaces(_linux.CLONE_NEWNET):
                raise SandboxError("RUN --network=none needs a network namespace, which cannot be created here")
            flags |= _linux.CLONE_NEWNET
        if mounts and not self.namespaces:
            raise SandboxError("RUN --mount needs a mount namespace, which cannot be created here")
        before = set(mounts_below(self.root))
        if self.namespaces:
            plan = prepare_mounts(self.root, self._scratch)
        else:
            plan = prepare_fallback(self.root, self._scratch)
        try:
            extra = prepare_extra_mounts(self.root, mounts, plan.created)
            spec = ChildSpec(
                argv=tuple(argv),
                env=dict(env),
                cwd=cwd,
                user=user,
                chroot=str(self.root),
                unshare_flags=flags,
                setup_mounts=functools.partial(_mount_all, plan, extra) if self.namespaces else None,
                proc_mountpoint=str(plan.targets["proc"]) if "proc" in plan.targets else None,
                loopback_up=network == "none",
                hostname=self.hostname,
                pivot_root=self.namespaces and _linux.pivot_available(),
                capabilities=_linux.RUN_CAPABILITIES if self.namespaces
                else _linux.RUN_CAPABILITIES - {_linux.CAP_SYS_CHROOT},
                last_capability=self._last_cap,
            )
            return run_child(spec, as_sink(stdout))
        finally:
            plan.cleanup()
            left = sorted(set(mounts_below(self.root)) - before)
            if left:
                # Cannot happen with a private namespace; refuse to snapshot over mounts.
                raise SandboxError(f"mounts left under {self.root} after RUN: {', '.join(left)}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._remove_scratch()

    def __enter__(self) -> "ChrootSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
