"""The filesystems a chrooted RUN sees: /proc, /dev, /sys, /etc/hosts, /etc/resolv.conf.

``prepare_mounts`` (in the builder, before the fork) finds the mount points
inside the stage root with an in-root walk and creates missing ones,
remembering what it created, and decides what is mounted over them: the plan's
``steps`` (``mount_steps``, values of ``mountplan``). ``apply_mounts`` (in the
monitor, inside its private mount namespace) only executes those steps. ``MountPlan.cleanup`` (in the
builder, after the step) removes what was created, so an image whose base has
no /etc/hosts does not gain an empty one in the RUN's layer (buildah's chroot
isolation leaks these files; we do not).

/dev is a fresh tmpfs holding bind mounts of a few host device nodes (null,
zero, full, random, urandom, tty), its own devpts instance and a /dev/shm
tmpfs — never the host's /dev, which would expose its disks. /etc/hosts and
/etc/resolv.conf are *copies* of the host's files bound read-write, so a RUN
editing them changes neither the host nor the layer. /sys is read-only with
Docker's masked paths hidden; init applies the /proc masks and read-only
paths once it has mounted the fresh procfs (``mountplan.proc_steps``, decided by
``process.run_child`` before the fork).

Without a mount namespace (``prepare_fallback``) only device nodes and the
two /etc files are created as plain files when missing, and removed again
afterwards; there is no /proc or /sys then.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pybuildless.fs import inroot
from pybuildless.sandbox import mountplan
from pybuildless.sandbox.mountplan import DEVICE_NODES

log = logging.getLogger(__name__)

_DIR_TARGETS = ("proc", "dev", "sys")
_FILE_TARGETS = {"hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf"}
_DEFAULT_HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class MountPlan:
    """The mounts that make a RUN's view of its root, and what they created."""

    root: Path
    targets: dict[str, Path] = field(default_factory=dict)
    created: list[Path] = field(default_factory=list)
    # What the monitor mounts, decided here in the builder (mount_steps).
    steps: tuple[mountplan.MountStep, ...] = ()

    def cleanup(self) -> None:
        """Remove the mount points and files this plan created (mounts are gone by now)."""
        remove_created(self.created)


def remove_created(created: list[Path]) -> None:
    """Undo creations in reverse order; a directory the step put files into is kept."""
    for path in reversed(created):
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # e.g. the RUN put files into an /etc we created: they belong to the layer.
            log.debug("keeping %s: %s", path, exc.strerror)
    created.clear()


def _ensure(plan: MountPlan, root: inroot.Root, logical: str, *, directory: bool) -> Path | None:
    """Resolve ``logical`` in the root and create it if missing (with at most one missing parent,
    /etc for /etc/hosts); None if unusable."""
    try:
        target = root.make_stub(logical, directory=directory, created=plan.created, max_new_parents=1)
    except inroot.StubError as exc:
        log.warning("not mounting %s: %s", logical, exc)
        return None
    if not directory and not stat.S_ISREG(os.lstat(target).st_mode):
        log.warning("not mounting %s: it exists and is not a regular file", logical)
        return None
    return target


def _host_copy(scratch: Path, name: str, source: str, default: bytes) -> Path:
    try:
        with open(source, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        data = default
    copy = scratch / name
    copy.write_bytes(data)
    copy.chmod(0o644)
    return copy


def prepare_mounts(root: Path, scratch: Path) -> MountPlan:
    plan = MountPlan(root=Path(os.path.abspath(root)))
    try:
        with inroot.Root(plan.root) as in_root:
            for name in _DIR_TARGETS:
                target = _ensure(plan, in_root, "/" + name, directory=True)
                if target is not None:
                    plan.targets[name] = target
            file_targets = {name: _ensure(plan, in_root, logical, directory=False)
                            for name, logical in _FILE_TARGETS.items()}
        for name, logical in _FILE_TARGETS.items():
            target = file_targets[name]
            if target is not None:
                plan.targets[name] = target
                _host_copy(scratch, name, logical, _DEFAULT_HOSTS if name == "hosts" else b"")
        plan.steps = mount_steps(plan.targets, scratch)
    except BaseException:
        plan.cleanup()
        raise
    return plan


def mount_steps(targets: dict[str, Path], scratch: Path) -> tuple[mountplan.MountStep, ...]:
    """What the monitor mounts over the prepared targets, in order (/proc is init's, see
    ``mountplan.proc_steps``)."""
    steps: list[mountplan.MountStep] = []
    if "dev" in targets:
        steps += mountplan.dev_steps(targets["dev"])
    if "sys" in targets:
        steps += mountplan.sys_steps(targets["sys"])
    steps += [mountplan.bind_step(scratch / name, targets[name]) for name in _FILE_TARGETS if name in targets]
    return tuple(steps)


def apply_mounts(plan: MountPlan) -> None:
    """Mount everything; runs in the monitor after unshare(CLONE_NEWNS)."""
    mountplan.run_steps(plan.steps)


def prepare_fallback(root: Path, scratch: Path) -> MountPlan:
    """No mount namespace: plain files instead of mounts (see the module docstring)."""
    plan = MountPlan(root=Path(os.path.abspath(root)))
    try:
        with inroot.Root(plan.root) as in_root:
            dev = _ensure(plan, in_root, "/dev", directory=True)
            if dev is not None:
                _make_device_nodes(plan, dev)
            for name, logical in _FILE_TARGETS.items():
                made = len(plan.created)
                try:
                    target = in_root.make_stub(logical, directory=False, created=plan.created, max_new_parents=0)
                except inroot.StubError:
                    continue
                if len(plan.created) == made:
                    continue  # the image has its own
                copy = _host_copy(scratch, name, logical, _DEFAULT_HOSTS if name == "hosts" else b"")
                fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "wb") as f:
                    f.write(copy.read_bytes())
    except BaseException:
        plan.cleanup()
        raise
    return plan


def _make_device_nodes(plan: MountPlan, dev: Path) -> None:
    for name in DEVICE_NODES:
        node = dev / name
        if os.path.lexists(node):
            continue
        try:
            host = os.stat(f"/dev/{name}")
            os.mknod(node, 0o666 | stat.S_IFCHR, host.st_rdev)
            os.chmod(node, 0o666)
            plan.created.append(node)
        except OSError as exc:
            log.warning("cannot create /dev/%s in the RUN root: %s", name, exc.strerror)


def remove_scratch(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
