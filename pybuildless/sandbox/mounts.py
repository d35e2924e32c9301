"""The filesystems a chrooted RUN sees: /proc, /dev, /sys, /etc/hosts, /etc/resolv.conf.

``prepare_mounts`` (in the builder, before the fork) finds the mount points
inside the stage root with an in-root walk and creates missing ones,
remembering what it created. ``apply_mounts`` (in the monitor, inside its
private mount namespace) mounts over them. ``MountPlan.cleanup`` (in the
builder, after the step) removes what was created, so an image whose base has
no /etc/hosts does not gain an empty one in the RUN's layer (buildah's chroot
isolation leaks these files; we do not).

/dev is a fresh tmpfs holding bind mounts of a few host device nodes (null,
zero, full, random, urandom, tty), its own devpts instance and a /dev/shm
tmpfs — never the host's /dev, which would expose its disks. /etc/hosts and
/etc/resolv.conf are *copies* of the host's files bound read-write, so a RUN
editing them changes neither the host nor the layer. /sys is read-only with
Docker's masked paths hidden; init applies the /proc masks and read-only
paths once it has mounted the fresh procfs (``protect_proc``).

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
from pybuildless.fs.mountinfo import mounts_below
from pybuildless.sandbox import _linux

log = logging.getLogger(__name__)

DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
_DIR_TARGETS = ("proc", "dev", "sys")
_FILE_TARGETS = {"hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf"}
_DEFAULT_HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class MountPlan:
    root: Path
    scratch: Path
    targets: dict[str, Path] = field(default_factory=dict)
    created: list[Path] = field(default_factory=list)

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
    plan = MountPlan(root=Path(os.path.abspath(root)), scratch=scratch)
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
    except BaseException:
        plan.cleanup()
        raise
    return plan


def apply_mounts(plan: MountPlan) -> None:
    """Mount everything; runs in the monitor after unshare(CLONE_NEWNS)."""
    dev = plan.targets.get("dev")
    if dev is not None:
        _mount_dev(dev)
    sys_target = plan.targets.get("sys")
    if sys_target is not None:
        _mount_sys(sys_target)
        mask_paths(sys_target, SYS_MASKED_PATHS + _thermal_throttle_dirs(sys_target))
    for name in _FILE_TARGETS:
        target = plan.targets.get(name)
        if target is not None:
            _linux.mount(str(plan.scratch / name), target, None, _linux.MS_BIND)


def _mount_sys(target: Path) -> None:
    """A read-only sysfs; where a fresh one is refused (a user namespace that does not own the
    network namespace), the host's /sys bound recursively and made read-only all the way down,
    so that none of its sub-mounts (cgroup, debugfs, tracefs, ...) stays writable."""
    ro = _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
    try:
        _linux.mount("sysfs", target, "sysfs", ro)
        return
    except OSError as exc:
        log.debug("fresh sysfs refused (%s); binding the host's /sys read-only", exc.strerror)
    _linux.mount("/sys", target, None, _linux.MS_BIND | _linux.MS_REC)
    if not _linux.make_tree_readonly(target):
        for point in [str(target)] + mounts_below(target):
            remount_readonly(point)


# Docker's default container view of the kernel, applied to every RUN step.
# Masked and read-only paths as in moby daemon/pkg/oci/defaults.go (b985e2313a86, defaultLinuxMaskedPaths and
# ReadonlyPaths); runc libcontainer/specconv/example.go (76d9cf5da568) has the same base list. Masking follows runc
# libcontainer/rootfs_linux.go maskPaths/maskDir/readonlyPath: a directory gets an empty read-only tmpfs, a file
# a bind of /dev/null, a read-only path a bind onto itself remounted read-only with its nosuid/nodev/noexec kept;
# a path the kernel does not have is skipped.
PROC_MASKED_PATHS = ("acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "sched_debug", "scsi",
                     "timer_list", "timer_stats")
PROC_READONLY_PATHS = ("bus", "fs", "irq", "sys", "sysrq-trigger")
SYS_MASKED_PATHS = ("devices/virtual/powercap", "firmware")


def _thermal_throttle_dirs(sys_dir: Path) -> tuple[str, ...]:
    # moby masks /sys/devices/system/cpu/cpuN/thermal_throttle for every possible CPU that has one.
    cpus = sys_dir / "devices/system/cpu"
    try:
        names = os.listdir(cpus)
    except OSError:
        return ()
    return tuple(f"devices/system/cpu/{n}/thermal_throttle" for n in sorted(names)
                 if n.startswith("cpu") and n[3:].isdigit() and os.path.isdir(cpus / n / "thermal_throttle"))


def protect_proc(proc_dir: str | os.PathLike[str]) -> None:
    """Mask and make read-only the host-global parts of a freshly mounted procfs (runs in init)."""
    base = Path(proc_dir)
    mask_paths(base, PROC_MASKED_PATHS)
    for name in PROC_READONLY_PATHS:
        path = base / name
        try:
            _linux.mount(str(path), path, None, _linux.MS_BIND | _linux.MS_REC)
        except FileNotFoundError:
            continue
        remount_readonly(path)


def remount_readonly(path: str | os.PathLike[str]) -> None:
    # Keep nosuid/nodev/noexec: a user namespace refuses to clear flags locked on the mount.
    keep = os.statvfs(path).f_flag & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)
    _linux.mount(str(path), path, None, keep | _linux.MS_BIND | _linux.MS_REMOUNT | _linux.MS_RDONLY)


def mask_paths(base: Path, names: tuple[str, ...]) -> None:
    """Hide ``base/name`` for each name: an empty read-only tmpfs over a directory, /dev/null over a file."""
    null = _dev_null()
    for name in names:
        path = base / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                _linux.mount("tmpfs", path, "tmpfs", _linux.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
            except OSError:
                # some kernels reject nr_inodes<2 (runc's maskDir retries the same way)
                _linux.mount("tmpfs", path, "tmpfs", _linux.MS_RDONLY, "nr_blocks=1,nr_inodes=2")
        else:
            _linux.mount(null, path, None, _linux.MS_BIND)


def _dev_null() -> str:
    # Binding anything but the real null device over a masked file would expose that instead.
    st = os.stat("/dev/null")
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (1, 3):
        raise OSError("/dev/null is not the null device; cannot mask kernel files")
    return "/dev/null"


def _mount_dev(dev: Path) -> None:
    _linux.mount("tmpfs", dev, "tmpfs", _linux.MS_NOSUID | _linux.MS_NOEXEC, "mode=755,size=65536k")
    for name in DEVICE_NODES:
        host = f"/dev/{name}"
        if not os.path.exists(host):
            continue
        node = dev / name
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        _linux.mount(host, node, None, _linux.MS_BIND)
    (dev / "pts").mkdir()
    try:
        _linux.mount("devpts", dev / "pts", "devpts", _linux.MS_NOSUID | _linux.MS_NOEXEC,
                     "newinstance,ptmxmode=0666,mode=0620")
    except OSError as exc:
        log.debug("no devpts in the sandbox: %s", exc)
    (dev / "shm").mkdir()
    _linux.mount("shm", dev / "shm", "tmpfs", _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC,
                 "mode=1777,size=65536k")
    for name, target in DEV_SYMLINKS.items():
        os.symlink(target, dev / name)


def prepare_fallback(root: Path, scratch: Path) -> MountPlan:
    """No mount namespace: plain files instead of mounts (see the module docstring)."""
    plan = MountPlan(root=Path(os.path.abspath(root)), scratch=scratch)
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
