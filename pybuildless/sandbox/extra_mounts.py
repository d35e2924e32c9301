"""Extra mounts for one RUN (the seam for ``RUN --mount``): host bind mounts and tmpfs.

The executor turns ``--mount=type=cache|bind|secret|tmpfs`` into ``Mount``
values (a cache directory, a secret file, a context subtree...); the sandbox
only mounts them. Like the standard mounts they exist only in the step's
private mount namespace. Mount points missing from the root are created
before the step and removed after it (BuildKit removes such "mount stubs"
too), so nothing of a ``--mount`` reaches the layer.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pybuildless.errors import SandboxError
from pybuildless.fs import inroot
from pybuildless.sandbox import _linux

MOUNT_KINDS = ("bind", "tmpfs")


@dataclass(frozen=True)
class Mount:
    """Mount ``source`` (a host path) or a fresh tmpfs at ``target`` (absolute, inside the root)."""

    target: str
    source: Path | None = None
    kind: str = "bind"
    readonly: bool = False
    tmpfs_size: int | None = None  # bytes


@dataclass(frozen=True)
class PreparedMount:
    """A RUN mount made ready on the host side, to bind into the sandbox."""

    mount: Mount
    host_target: Path
    directory: bool
    root: Path


def _describe(m: Mount) -> str:
    return f"RUN --mount type={m.kind},target={m.target}"


def prepare_extra_mounts(root: Path, mounts: Sequence[Mount], created: list[Path]) -> list[PreparedMount]:
    """Check the mounts and create their missing mount points (appended to ``created``)."""
    root = Path(os.path.abspath(root))
    prepared = []
    # Parents before children, so a mount inside another one lands on top of it.
    for m in sorted(mounts, key=lambda m: len([p for p in m.target.split("/") if p])):
        what = _describe(m)
        if m.kind not in MOUNT_KINDS:
            raise SandboxError(f"{what}: unknown mount kind (expected {', '.join(MOUNT_KINDS)})")
        if not m.target.startswith("/") or not [p for p in m.target.split("/") if p not in ("", ".")]:
            raise SandboxError(f"{what}: the target must be an absolute path below /")
        if m.kind == "bind":
            if m.source is None:
                raise SandboxError(f"{what}: a bind mount needs a source")
            try:
                source_mode = os.stat(m.source).st_mode
            except OSError as exc:
                raise SandboxError(f"{what}: source {m.source}: {exc.strerror}") from None
            directory = stat.S_ISDIR(source_mode)
        else:
            directory = True
        with inroot.Root(root) as in_root:
            try:
                host_target = in_root.make_stub(m.target, directory=directory, created=created)
            except inroot.StubError as exc:
                raise SandboxError(f"{what}: the target cannot be made: {exc}") from None
        prepared.append(PreparedMount(m, host_target, directory, root))
    return prepared


def apply_extra_mounts(prepared: Sequence[PreparedMount]) -> None:
    """Mount them; runs in the monitor, after the standard mounts."""
    for pm in prepared:
        m = pm.mount
        # Resolved again in the root as it is now: an earlier mount may hide the stub made
        # before the step, and a cache mount holds what earlier steps left there (symlinks
        # too), so the target is found, or made, below the mounts and never outside the root.
        try:
            with inroot.Root(pm.root) as in_root:
                target = in_root.make_stub(m.target, directory=pm.directory, created=[])
        except inroot.StubError as exc:
            raise SandboxError(f"{_describe(m)}: the target cannot be made: {exc}") from None
        if m.kind == "tmpfs":
            options = "mode=755" + (f",size={m.tmpfs_size}" if m.tmpfs_size else "")
            flags = _linux.MS_NOSUID | _linux.MS_NODEV | (_linux.MS_RDONLY if m.readonly else 0)
            _linux.mount("tmpfs", target, "tmpfs", flags, options)
            continue
        _linux.mount(str(m.source), target, None, _linux.MS_BIND | _linux.MS_REC)
        if m.readonly:
            _linux.mount(None, target, None, _linux.MS_BIND | _linux.MS_REMOUNT | _linux.MS_RDONLY)
