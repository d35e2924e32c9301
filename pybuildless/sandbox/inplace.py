"""InPlaceSandbox: RUN directly in the builder's own root, as Kaniko does.

Only meaningful when the builder runs inside a throwaway container whose
``/`` *is* the image being built (``--isolation=inplace``). Same process
handling as the chroot sandbox: a monitor that kills everything the step
started, in a pid namespace when permitted. With a private mount namespace
/proc is remounted (with Docker's masked and read-only paths) so that ``ps``
shows the step's own pid namespace; the container already provides /dev, /sys
and /etc files, and they are on Kaniko's ignore list.

The executor's prefix (``/kaniko``: credentials, its own files, caches) and
its work dir are hidden from the step wherever a mount namespace can be had
(``prefix_hiding``): in the private mount namespace above, or else in a user
namespace with an identity map. Where neither is possible one warning says
that steps can read them.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pybuildless.errors import SandboxError
from pybuildless.sandbox import _linux
from pybuildless.sandbox.base import RunResult, Sink, as_sink, check_run_args, probe_namespaces
from pybuildless.sandbox.extra_mounts import Mount, PreparedMount, apply_extra_mounts, prepare_extra_mounts
from pybuildless.sandbox import prefix_hiding
from pybuildless.sandbox.materialize import put_in_place, take_away
from pybuildless.sandbox.mounts import remove_created
from pybuildless.sandbox.process import ChildSpec, run_child

if TYPE_CHECKING:
    from pybuildless.fs.users import ResolvedUser

log = logging.getLogger(__name__)

_NAMESPACES = _linux.CLONE_NEWNS | _linux.CLONE_NEWPID


class InPlaceSandbox:
    def __init__(self, *, namespaces: bool | None = None, scratch_parent: Path | None = None,
                 hidden: Sequence[str] | None = None) -> None:
        """``namespaces``: None probes on first use, False disables them (and the hiding).

        ``scratch_parent``: the executor's scratch dir (nothing is copied there); its work
        dir is hidden from steps with the prefix. ``hidden``: the directories to hide
        (default: ``$KANIKO_DIR`` or /kaniko, and the work dir); those missing are skipped.
        """
        self._namespaces = namespaces
        self._closed = False
        self.hidden = tuple(prefix_hiding.existing_dirs(hidden)) if hidden is not None \
            else prefix_hiding.default_hidden_dirs(scratch_parent)
        self._hiding: str | None = None
        # The container's capabilities, read before any step's user namespace resets them.
        self._step_caps = prefix_hiding.step_capabilities()
        self._last_cap = _linux.last_capability()

    @property
    def namespaces(self) -> bool:
        if self._namespaces is None:
            self._namespaces = probe_namespaces(_NAMESPACES)
        return self._namespaces

    @property
    def hiding(self) -> str:
        """How the hidden directories are kept from steps: one of ``prefix_hiding.MODES``,
        or ``nothing`` when there is nothing to hide."""
        if self._hiding is None:
            if not self.hidden:
                self._hiding = "nothing"
            elif self._namespaces is False:
                self._hiding = "none"
                prefix_hiding.warn_unhidden(self.hidden, "namespaces are switched off")
            else:
                mode, why = prefix_hiding.choose_mode(self.hidden, namespaces=self.namespaces)
                self._hiding = mode
                if mode == "none":
                    prefix_hiding.warn_unhidden(self.hidden, why)
                else:
                    log.info("RUN steps do not see %s (%s)", ", ".join(self.hidden), why)
        return self._hiding

    def build_spec(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
                   network: str = "default", extra: Sequence[PreparedMount] = ()) -> ChildSpec:
        """Validate the arguments and describe the child (separate so it can be checked without running)."""
        if self._closed:
            raise SandboxError("sandbox already closed")
        check_run_args(argv, env, network)
        hiding = self.hiding
        mounts = functools.partial(apply_extra_mounts, list(extra)) if extra else None
        if hiding == "userns":
            # The monitor makes its own user, mount (and network) namespaces; no pid namespace.
            return ChildSpec(
                argv=tuple(argv), env=dict(env), cwd=cwd, user=user, chroot=None, unshare_flags=0,
                setup_mounts=functools.partial(prefix_hiding.setup_userns_mode, self.hidden, mounts,
                                               network == "none"),
                loopback_up=network == "none",
                capabilities=self._step_caps, last_capability=self._last_cap,
            )
        flags = _NAMESPACES if self.namespaces else 0
        if extra and not self.namespaces:
            raise SandboxError("RUN --mount needs a mount namespace, which cannot be created here")
        if network == "none":
            if not probe_namespaces(_linux.CLONE_NEWNET):
                raise SandboxError("RUN --network=none needs a network namespace, which cannot be created here")
            flags |= _linux.CLONE_NEWNET
        hide = hiding == "namespaces"
        return ChildSpec(
            argv=tuple(argv),
            env=dict(env),
            cwd=cwd,
            user=user,
            chroot=None,
            unshare_flags=flags,
            setup_mounts=functools.partial(prefix_hiding.setup_namespaces_mode, self.hidden, mounts)
            if hide else mounts,
            proc_mountpoint="/proc" if flags & _linux.CLONE_NEWPID else None,
            loopback_up=network == "none",
            # Without CAP_SYS_ADMIN the step can neither unmount the hiding tmpfs nor the /proc masks.
            capabilities=self._step_caps if hide else None,
            last_capability=self._last_cap,
            protect_proc=hide,
        )

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
            stdout: Sink, network: str = "default", mounts: Sequence[Mount] = (),
            keep_upper: object = None) -> RunResult:  # no overlay in place: nothing to keep
        self.build_spec(argv, env=env, cwd=cwd, user=user, network=network)  # validate before touching /
        created: list[Path] = []
        # Where nothing can be mounted (Docker's default seccomp profile, no CAP_SYS_ADMIN),
        # RUN --mount is imitated with copies (sandbox.materialize): secrets still reach the step.
        copied: list[PreparedMount] = []
        try:
            extra = prepare_extra_mounts(Path("/"), mounts, created) if mounts else []
            if extra and self.hiding != "userns" and not self.namespaces:
                put_in_place(extra, created, copied)
                extra = []
            spec = self.build_spec(argv, env=env, cwd=cwd, user=user, network=network, extra=extra)
            return RunResult(run_child(spec, as_sink(stdout)))
        finally:
            try:
                take_away(copied)
            finally:
                remove_created(created)

    def close(self) -> None:
        self._closed = True
