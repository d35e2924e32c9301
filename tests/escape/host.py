"""What the escape corpus checks on the host before and after a build, and the
unprivileged-container jail in-place mode runs in.

The host snapshot reads only: host-global kernel knobs (core_pattern,
/proc/sys/vm, a few /proc/sys/kernel values, writable /sys/kernel files),
the host's mount table, the offset of the wall clock from the monotonic clock,
the loaded modules, and the process list (for anything a RUN left behind).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.jail import executor_stage_config

# Writing these triggers an action; they are write-only anyway.
_TRIGGERS = {"drop_caches", "compact_memory", "stat_refresh"}
_KERNEL_KNOBS = ("core_pattern", "core_pipe_limit", "core_uses_pid", "hostname", "domainname", "modprobe",
                 "sysrq", "kptr_restrict", "dmesg_restrict", "panic", "printk", "unprivileged_bpf_disabled",
                 "perf_event_paranoid", "randomize_va_space")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _sys_kernel_writable() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk("/sys/kernel"):
        depth = dirpath.count("/") - 2
        if depth >= 2:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if d not in ("debug", "tracing", "slab", "irq", "security")]
        for name in filenames:
            p = Path(dirpath, name)
            try:
                if p.stat().st_mode & 0o200 and p.stat().st_mode & 0o400:
                    found.append(p)
            except OSError:
                continue
    return found


# Where other work on this machine (test runs, container engines' network namespaces and
# state) mounts and unmounts while a build runs.
_OTHERS_MOUNTS = ("/tmp/", "/run/docker/", "/run/netns/", "/run/containerd/", "/run/user/", "/var/lib/docker/")


def _mounts(own_tmp: str) -> set[tuple[str, str, str, str]]:
    """(mount point, fs type, source, options) of the host's mount table. Mounts other
    work makes below _OTHERS_MOUNTS come and go; only those below ``own_tmp`` count there."""
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            point = fields[4]
            if point.startswith(_OTHERS_MOUNTS) and not point.startswith(own_tmp):
                continue
            out.add((point, rfields[0], rfields[1], fields[5]))
    return out


def processes_with(marker: str) -> list[str]:
    """``pid: cmdline`` of every host process whose command line holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{entry.name}: {cmd}")
    return found


def tracer_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no TracerPid in /proc/{pid}/status")


@dataclass(frozen=True)
class HostState:
    knobs: dict[str, str | None]
    mounts: frozenset[tuple[str, str, str, str]]
    clock_offset: float  # CLOCK_REALTIME - CLOCK_MONOTONIC
    modules: str | None
    keys: frozenset[str]  # root's keys (/proc/keys as read by the host's root): id and description

    @classmethod
    def read(cls, own_tmp: Path) -> "HostState":
        knobs: dict[str, str | None] = {}
        for p in sorted(Path("/proc/sys/vm").iterdir()):
            if p.name not in _TRIGGERS:
                knobs[str(p)] = _read(p)
        for name in _KERNEL_KNOBS:
            knobs[f"/proc/sys/kernel/{name}"] = _read(Path("/proc/sys/kernel", name))
        for p in _sys_kernel_writable():
            knobs[str(p)] = _read(p)
        knobs["/sys/kernel/uevent_helper"] = _read(Path("/sys/kernel/uevent_helper"))
        offset = time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
        # Session keyrings come and go with process sessions: runc makes a "_ses.<container id>"
        # one per container, and other work on this machine runs containers. Keys a step could
        # plant sit in persistent keyrings (the user keyring) and are kept.
        keys = frozenset(" ".join(f[:1] + f[8:]) for f in
                         (line.split() for line in (_read(Path("/proc/keys")) or "").splitlines())
                         if len(f) > 8 and not (f[7] == "keyring" and f[8].startswith("_ses.")))
        return cls(knobs, frozenset(_mounts(str(own_tmp))), offset, _read(Path("/proc/modules")), keys)

    def differences(self, after: "HostState") -> list[str]:
        diff = [f"{k}: {self.knobs[k]!r} -> {after.knobs.get(k)!r}" for k in self.knobs
                if after.knobs.get(k) != self.knobs[k]]
        diff += [f"mount added: {m}" for m in sorted(after.mounts - self.mounts)]
        diff += [f"mount removed: {m}" for m in sorted(self.mounts - after.mounts)]
        if abs(after.clock_offset - self.clock_offset) > 2.0:
            diff.append(f"wall clock moved by {after.clock_offset - self.clock_offset:.1f} s")
        diff += [f"key added: {k}" for k in sorted(after.keys - self.keys)]
        if after.modules != self.modules:
            diff.append("loaded modules changed")
        return diff


# Docker's default capability set (moby daemon/pkg/oci/caps/defaults.go, commit
# b985e2313a8676e18072b442911fc8f64f17d440) as numbers (linux/capability.h): what an
# unprivileged container keeps. chown dac_override fowner fsetid kill setgid setuid setpcap
# net_bind_service net_raw sys_chroot mknod audit_write setfcap.
DOCKER_CAPS = (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31)
# Docker's masked and read-only /proc paths (moby daemon/pkg/oci/defaults.go, same commit).
DOCKER_MASKED_FILES = ("interrupts", "kcore", "keys", "latency_stats", "sched_debug", "timer_list", "timer_stats")
DOCKER_MASKED_DIRS = ("acpi", "asound", "scsi")
DOCKER_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")

# $0 = jail, $1 = the static enter helper (enter.c), $2 = "mask" or "nomask"; the rest is the command.
_CONTAINER_SETUP = r"""
set -e
J=$0; ENTER=$1; MASK=$2; shift 2
mount --rbind "$J" "$J"   # a mount point of its own, for pivot_root
# /dev as a container engine makes it: a tmpfs with a few nodes, never the host's disks
mount -t tmpfs -o mode=755,nosuid tmpfs "$J/dev"
for n in null zero full random urandom tty; do : > "$J/dev/$n"; mount --bind "/dev/$n" "$J/dev/$n"; done
mkdir "$J/dev/pts" "$J/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$J/dev/pts"; ln -s pts/ptmx "$J/dev/ptmx"
mount -t tmpfs -o nosuid,nodev tmpfs "$J/dev/shm"
mkdir -p "$J/sys"
if [ "$MASK" = mask ]; then
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$J/sys"
  for p in $MASKED_FILES; do if [ -e "$J/proc/$p" ]; then mount --bind /dev/null "$J/proc/$p"; fi; done
  for p in $MASKED_DIRS; do if [ -d "$J/proc/$p" ]; then mount -t tmpfs -o ro tmpfs "$J/proc/$p"; fi; done
  for p in $READONLY; do
    if [ -e "$J/proc/$p" ]; then mount --bind "$J/proc/$p" "$J/proc/$p"; mount -o remount,bind,ro "$J/proc/$p"; fi
  done
else
  mount -t sysfs -o nosuid,nodev,noexec sysfs "$J/sys"
fi
caps=$CAPS seccomp=$SECCOMP user=$RUN_AS
unset MASKED_FILES MASKED_DIRS READONLY CAPS SECCOMP RUN_AS
exec "$ENTER" "$J" "$caps" "$seccomp" "$user" "$@"
"""


@dataclass(frozen=True)
class ContainerRun:
    returncode: int
    stdout: str
    stderr: str


def run_in_container(jail: Path, enter: Path, argv: list[str], *, env: dict[str, str] | None = None,
                     caps: tuple[int, ...] = DOCKER_CAPS, masks: bool = True, seccomp: Path | None = None,
                     user: str | None = None, stage: str = "executor", timeout: int = 300) -> ContainerRun:
    """``argv`` in ``jail`` as in an unprivileged container: by default Docker's capabilities,
    masked and read-only /proc paths, read-only /sys, its own /dev, pivot_root, mount and pid
    namespaces, and no seccomp profile — like a Kubernetes pod with ``seccompProfile:
    Unconfined``. ``caps``, ``masks`` and ``seccomp`` (a BPF program file) change one layer at a
    time; ``user`` ("UID:GID") runs the command as that user, as ``docker run --user``; ``stage``
    names the Dockerfile.executor stage whose environment the command gets. Everything is
    mounted in the private namespace only. ``enter``: the static helper built from enter.c."""
    image = executor_stage_config(stage=stage)
    full_env = {**image["env"], **(env or {})}
    full_env["PATH"] = full_env.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin"
    full_env.update(MASKED_FILES=" ".join(DOCKER_MASKED_FILES), MASKED_DIRS=" ".join(DOCKER_MASKED_DIRS),
                    READONLY=" ".join(DOCKER_READONLY), CAPS=",".join(str(c) for c in caps),
                    SECCOMP=str(seccomp) if seccomp else "-", RUN_AS=user or "-")
    proc = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", f"--mount-proc={jail}/proc",
         "/bin/sh", "-c", _CONTAINER_SETUP, str(jail), str(enter), "mask" if masks else "nomask", *argv],
        env=full_env, capture_output=True, timeout=timeout, text=True, errors="replace")
    return ContainerRun(proc.returncode, proc.stdout, proc.stderr)
