"""InPlaceSandbox: RUN directly in the builder's own root, as Kaniko does.

Only meaningful when the builder runs inside a throwaway container whose
``/`` *is* the image being built (``--isolation=inplace``). Same process
handling as the chroot sandbox: a monitor that kills everything the step
started, in a pid namespace when permitted. With a private mount namespace
/proc is remounted so that ``ps`` shows the step's own pid namespace; nothing
else is mounted (the container already provides /dev, /sys and /etc files,
and they are on Kaniko's ignore list).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pybuildless.errors import SandboxError
from pybuildless.sandbox import _linux
from pybuildless.sandbox.base import Sink, as_sink, check_run_args, probe_namespaces
from pybuildless.sandbox.extra_mounts import Mount, PreparedMount, apply_extra_mounts, prepare_extra_mounts
from pybuildless.sandbox.mounts import remove_created
from pybuildless.sandbox.process import ChildSpec, run_child

if TYPE_CHECKING:
    from pybuildless.fs.users import ResolvedUser

log = logging.getLogger(__name__)

_NAMESPACES = _linux.CLONE_NEWNS | _linux.CLONE_NEWPID


class InPlaceSandbox:
    def __init__(self, *, namespaces: bool | None = None, scratch_parent: Path | None = None) -> None:
        """``namespaces``: None probes on first use, False disables them.

        ``scratch_parent`` is accepted for symmetry with ChrootSandbox (nothing is copied here).
        """
        self._namespaces = namespaces
        self._closed = False

    @property
    def namespaces(self) -> bool:
        if self._namespaces is None:
            self._namespaces = probe_namespaces(_NAMESPACES)
        return self._namespaces

    def build_spec(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
                   network: str = "default", extra: Sequence[PreparedMount] = ()) -> ChildSpec:
        """Validate the arguments and describe the child (separate so it can be checked without running)."""
        if self._closed:
            raise SandboxError("sandbox already closed")
        check_run_args(argv, env, network)
        flags = _NAMESPACES if self.namespaces else 0
        if extra and not self.namespaces:
            raise SandboxError("RUN --mount needs a mount namespace, which cannot be created here")
        if network == "none":
            if not probe_namespaces(_linux.CLONE_NEWNET):
                raise SandboxError("RUN --network=none needs a network namespace, which cannot be created here")
            flags |= _linux.CLONE_NEWNET
        return ChildSpec(
            argv=tuple(argv),
            env=dict(env),
            cwd=cwd,
            user=user,
            chroot=None,
            unshare_flags=flags,
            setup_mounts=functools.partial(apply_extra_mounts, list(extra)) if extra else None,
            proc_mountpoint="/proc" if flags & _linux.CLONE_NEWPID else None,
            loopback_up=network == "none",
        )

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
            stdout: Sink, network: str = "default", mounts: Sequence[Mount] = ()) -> int:
        self.build_spec(argv, env=env, cwd=cwd, user=user, network=network)  # validate before touching /
        created: list[Path] = []
        try:
            extra = prepare_extra_mounts(Path("/"), mounts, created) if mounts else []
            spec = self.build_spec(argv, env=env, cwd=cwd, user=user, network=network, extra=extra)
            return run_child(spec, as_sink(stdout))
        finally:
            remove_created(created)

    def close(self) -> None:
        self._closed = True
