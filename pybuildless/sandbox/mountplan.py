"""The kernel view of a RUN step as a plan: decided in the builder, executed in the forked children.

Every decision about the filesystems a step sees is made here, in the builder's own process,
as a tuple of ``MountStep`` values: what is mounted where, in which order, with which flags
and options, which device nodes are bound in, which /proc and /sys paths are masked or made
read-only. The monitor (after unshare(CLONE_NEWNS)) and init (after it has a pid namespace)
only execute a plan with ``run_steps``. What is left to them depends on what they find: a
masked path is covered according to its kind (a directory gets an empty tmpfs, a file the
null device) or skipped when this kernel lacks it, a sysfs refused in a user namespace is
replaced by the host's /sys bound read-only, and a devpts refused is logged.

The values follow Docker's default container, moby daemon/pkg/oci/defaults.go (b985e2313a86:
the mounts, defaultLinuxMaskedPaths, ReadonlyPaths) and runc libcontainer/rootfs_linux.go
(76d9cf5da568: default devices and symlinks, maskPaths, readonlyPath), with two differences
that make the step's view stricter: /dev is noexec, and /dev/pts has no gid=5 (an image need
not have a tty group).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pybuildless.fs.mountinfo import mounts_below
from pybuildless.sandbox import _linux

log = logging.getLogger(__name__)

# What run_steps does with a step.
MOUNT = "mount"            # mount(source, target, fstype, flags, data)
MOUNT_IF_ALLOWED = "mount-if-allowed"  # the same; a refusal is logged and the rest goes on
MAKE_FILE = "file"         # an empty file to bind a device node onto
MAKE_DIR = "dir"
SYMLINK = "symlink"        # target -> source
SYSFS = "sysfs"            # a fresh sysfs with these flags, else the host's /sys bound read-only throughout
MASK = "mask"              # an empty read-only tmpfs over a directory, the null device over a file
READ_ONLY = "read-only"    # bound onto itself and remounted read-only, keeping nosuid/nodev/noexec


@dataclass(frozen=True)
class MountStep:
    """One mount or unmount the sandbox's monitor performs, in order."""

    action: str
    target: str
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None


DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
PROC_MASKED_PATHS = ("acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "sched_debug", "scsi",
                     "timer_list", "timer_stats")
PROC_READONLY_PATHS = ("bus", "fs", "irq", "sys", "sysrq-trigger")
SYS_MASKED_PATHS = ("devices/virtual/powercap", "firmware")

_NOSUID_NOEXEC = _linux.MS_NOSUID | _linux.MS_NOEXEC
_NOSUID_NODEV_NOEXEC = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC


def dev_steps(dev: str | os.PathLike[str], host_dev: str = "/dev") -> tuple[MountStep, ...]:
    """A fresh /dev: tmpfs, binds of the host's harmless device nodes (never its disks), its own
    devpts instance, a /dev/shm tmpfs and the usual symlinks."""
    dev = str(dev)
    steps = [MountStep(MOUNT, dev, "tmpfs", "tmpfs", _NOSUID_NOEXEC, "mode=755,size=65536k")]
    for name in DEVICE_NODES:
        host = f"{host_dev}/{name}"
        if os.path.exists(host):
            steps += [MountStep(MAKE_FILE, f"{dev}/{name}"), MountStep(MOUNT, f"{dev}/{name}", host, None, _linux.MS_BIND)]
    steps += [
        MountStep(MAKE_DIR, f"{dev}/pts"),
        MountStep(MOUNT_IF_ALLOWED, f"{dev}/pts", "devpts", "devpts", _NOSUID_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620"),
        MountStep(MAKE_DIR, f"{dev}/shm"),
        MountStep(MOUNT, f"{dev}/shm", "shm", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k"),
    ]
    steps += [MountStep(SYMLINK, f"{dev}/{name}", target) for name, target in DEV_SYMLINKS.items()]
    return tuple(steps)


def thermal_throttle_dirs(sys_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """moby masks /sys/devices/system/cpu/cpuN/thermal_throttle of every CPU that has one, as the
    daemon sees them before the container starts; so does this, in the builder."""
    cpus = Path(sys_dir) / "devices/system/cpu"
    try:
        names = os.listdir(cpus)
    except OSError:
        return ()
    return tuple(f"devices/system/cpu/{n}/thermal_throttle" for n in sorted(names)
                 if n.startswith("cpu") and n[3:].isdigit() and os.path.isdir(cpus / n / "thermal_throttle"))


def sys_steps(target: str | os.PathLike[str], host_sys: str = "/sys") -> tuple[MountStep, ...]:
    """A read-only /sys with Docker's masked paths hidden."""
    target = str(target)
    masked = SYS_MASKED_PATHS + thermal_throttle_dirs(host_sys)
    return (MountStep(SYSFS, target, "sysfs", "sysfs", _NOSUID_NODEV_NOEXEC | _linux.MS_RDONLY),
            *(MountStep(MASK, f"{target}/{name}") for name in masked))


def proc_protection(proc_dir: str | os.PathLike[str]) -> tuple[MountStep, ...]:
    """Masks and read-only binds over the host-global parts of a procfs already mounted there."""
    base = str(proc_dir)
    return (*(MountStep(MASK, f"{base}/{name}") for name in PROC_MASKED_PATHS),
            *(MountStep(READ_ONLY, f"{base}/{name}") for name in PROC_READONLY_PATHS))


def proc_steps(proc_dir: str | os.PathLike[str], *, protect: bool) -> tuple[MountStep, ...]:
    """The fresh procfs init mounts in its pid namespace, then (``protect``) Docker's masks."""
    fresh = MountStep(MOUNT, str(proc_dir), "proc", "proc", _NOSUID_NODEV_NOEXEC)
    return (fresh, *proc_protection(proc_dir)) if protect else (fresh,)


def bind_step(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> MountStep:
    return MountStep(MOUNT, str(target), str(source), None, _linux.MS_BIND)


# ---- execution: runs in the monitor and in init (forked children) ----

def run_steps(steps: tuple[MountStep, ...]) -> None:
    for step in steps:
        _ACTIONS[step.action](step)


def _mount(step: MountStep) -> None:
    _linux.mount(step.source, step.target, step.fstype, step.flags, step.data)


def _mount_if_allowed(step: MountStep) -> None:
    try:
        _mount(step)
    except OSError as exc:
        log.debug("not mounted in the sandbox: %s", exc)


def _make_file(step: MountStep) -> None:
    os.close(os.open(step.target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))


def _make_dir(step: MountStep) -> None:
    os.mkdir(step.target)


def _symlink(step: MountStep) -> None:
    os.symlink(step.source, step.target)


def _sysfs(step: MountStep) -> None:
    """Where a fresh sysfs is refused (a user namespace that does not own the network namespace),
    the host's /sys bound recursively and made read-only all the way down, so that none of its
    sub-mounts (cgroup, debugfs, tracefs, ...) stays writable."""
    try:
        _mount(step)
        return
    except OSError as exc:
        log.debug("fresh sysfs refused (%s); binding the host's /sys read-only", exc.strerror)
    _linux.mount("/sys", step.target, None, _linux.MS_BIND | _linux.MS_REC)
    if not _linux.make_tree_readonly(step.target):
        for point in [step.target] + mounts_below(Path(step.target)):
            remount_readonly(point)


def _mask(step: MountStep) -> None:
    # runc maskPaths/maskDir: a path this kernel lacks is skipped.
    try:
        st = os.lstat(step.target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            _linux.mount("tmpfs", step.target, "tmpfs", _linux.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
        except OSError:
            # some kernels reject nr_inodes<2 (runc's maskDir retries the same way)
            _linux.mount("tmpfs", step.target, "tmpfs", _linux.MS_RDONLY, "nr_blocks=1,nr_inodes=2")
    else:
        _linux.mount(dev_null(), step.target, None, _linux.MS_BIND)


def _read_only(step: MountStep) -> None:
    try:
        _linux.mount(step.target, step.target, None, _linux.MS_BIND | _linux.MS_REC)
    except FileNotFoundError:
        return
    remount_readonly(step.target)


def remount_readonly(path: str | os.PathLike[str]) -> None:
    # Keep nosuid/nodev/noexec: a user namespace refuses to clear flags locked on the mount.
    keep = os.statvfs(path).f_flag & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)
    _linux.mount(str(path), path, None, keep | _linux.MS_BIND | _linux.MS_REMOUNT | _linux.MS_RDONLY)


def dev_null() -> str:
    # Binding anything but the real null device over a masked file would expose that instead.
    st = os.stat("/dev/null")
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (1, 3):
        raise OSError("/dev/null is not the null device; cannot mask kernel files")
    return "/dev/null"


_ACTIONS = {MOUNT: _mount, MOUNT_IF_ALLOWED: _mount_if_allowed, MAKE_FILE: _make_file, MAKE_DIR: _make_dir,
            SYMLINK: _symlink, SYSFS: _sysfs, MASK: _mask, READ_ONLY: _read_only}
