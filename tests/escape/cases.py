"""The escape corpus: one hostile RUN per way out of a container.

Each case is one RUN line that prints ``PROBE <case> blocked|ESCAPED <detail>``
(``probe.c`` for syscall-level attempts, busybox for shell-level ones). All
cases of a mode run as one build, one RUN per case, so a build costs one
base pull and one process start, and every case still reports on its own line.
A case whose RUN crashes prints ``PROBE <case> error`` and counts as a failure.

Every attempt is harmless when it succeeds (see probe.c): files are opened for
writing and not written, or written with the value they already hold.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    run: str  # the RUN line's shell command; its output has the PROBE line(s)
    what: str  # the way out it tries


def _probe(name: str, arg: str = "") -> str:
    return f'/probe {name} {arg}'.rstrip() + f' || echo "PROBE {name} error exit=$?"'


# The classic takeover's first step: read core_pattern and write the same value back.
_CORE_PATTERN_SHELL = (
    "cp /proc/sys/kernel/core_pattern /tmp/cp 2>/dev/null; "
    "if cat /tmp/cp > /proc/sys/kernel/core_pattern; then echo 'PROBE core_pattern_write ESCAPED wrote'; "
    "else echo 'PROBE core_pattern_write blocked write-failed'; fi")
_SYSRQ_SHELL = (  # opening is enough: nothing is written
    "if true > /proc/sysrq-trigger; then echo 'PROBE sysrq_trigger_shell ESCAPED opened'; "
    "else echo 'PROBE sysrq_trigger_shell blocked open-failed'; fi")
_MOUNT_SHELL = (
    "mkdir -p /tmp/ms && if mount -t tmpfs none /tmp/ms; then echo 'PROBE mount_shell ESCAPED mounted'; "
    "else echo 'PROBE mount_shell blocked mount-failed'; fi")
_UMOUNT_SHELL = (
    "if umount -l /proc; then echo 'PROBE umount_proc_shell ESCAPED unmounted'; "
    "else echo 'PROBE umount_proc_shell blocked umount-failed'; fi")
_UNSHARE_SHELL = (
    "if unshare -U -m -r sh -c 'mkdir -p /tmp/us && mount -t tmpfs none /tmp/us' 2>/dev/null; "
    "then echo 'PROBE unshare_shell ESCAPED mounted'; else echo 'PROBE unshare_shell blocked failed'; fi")
_MKNOD_SHELL = (
    "if ! mknod /tmp/vda b 253 0; then echo 'PROBE mknod_shell blocked mknod-failed'; "
    "elif head -c 512 /tmp/vda > /dev/null; then echo 'PROBE mknod_shell ESCAPED read-the-disk'; "
    "else echo 'PROBE mknod_shell blocked created-but-unreadable'; fi; rm -f /tmp/vda")

_KANIKO_SHELL = (
    "if cat /kaniko/.docker/config.json > /tmp/leak 2>/dev/null; "
    "then echo 'PROBE kaniko_credentials ESCAPED readable'; "
    "else echo 'PROBE kaniko_credentials blocked unreadable'; fi; rm -f /tmp/leak")

CASES: tuple[Case, ...] = (
    Case("core_pattern", _probe("core_pattern"), "open /proc/sys/kernel/core_pattern for writing"),
    Case("core_pattern_write", _CORE_PATTERN_SHELL, "read core_pattern and write the same value back"),
    Case("sysrq_trigger", _probe("sysrq_trigger"), "open /proc/sysrq-trigger for writing"),
    Case("sysrq_trigger_shell", _SYSRQ_SHELL, "open /proc/sysrq-trigger from the shell"),
    Case("proc_sys_vm", _probe("proc_sys_vm"), "any writable file under /proc/sys/vm"),
    Case("proc_sys_kernel", _probe("proc_sys_kernel"), "any writable file under /proc/sys/kernel"),
    Case("sys_kernel", _probe("sys_kernel"), "any writable file under /sys/kernel (uevent_helper where present)"),
    Case("kcore", _probe("kcore"), "read /proc/kcore"),
    Case("masked_paths", _probe("masked_paths"), "read /proc/keys, timer_list, sched_debug, interrupts, ..."),
    Case("proc_secret", _probe("proc_secret", "$(cat /secret-halves)"),
         "find the executor's secret in any /proc/<pid>/environ, cmdline or open file"),
    Case("kaniko_credentials", _KANIKO_SHELL, "read Kaniko mode's registry credentials"),
    Case("init_environ", _probe("init_environ"), "read /proc/1/environ"),
    Case("mount", _probe("mount"), "mount a tmpfs"),
    Case("mount_shell", _MOUNT_SHELL, "mount -t tmpfs from the shell"),
    Case("mount_proc", _probe("mount_proc"), "mount a fresh procfs"),
    Case("mount_cgroup", _probe("mount_cgroup"), "mount a cgroup v1 hierarchy (release_agent, CVE-2022-0492)"),
    Case("leaked_fds", _probe("leaked_fds"), "climb out through an inherited directory fd or cwd (CVE-2024-21626)"),
    Case("proc_roots", _probe("proc_roots", '"$HOST_MARKER"'), "reach the host's files through /proc/<pid>/root"),
    Case("umount", _probe("umount"), "umount2 (past the permission check)"),
    Case("pivot_root", _probe("pivot_root"), "pivot_root (past the permission check)"),
    Case("double_chroot", _probe("double_chroot", '"$HOST_MARKER"'), "chroot into a subdirectory and climb out"),
    Case("unshare_userns_mount", _probe("unshare_userns_mount"), "unshare -U -m, then mount"),
    Case("unshare_shell", _UNSHARE_SHELL, "busybox unshare -U -m -r, then mount"),
    Case("mknod_block", _probe("mknod_block"), "mknod the host disk's block device and open it"),
    Case("mknod_shell", _MKNOD_SHELL, "mknod b 253 0 and read it from the shell"),
    Case("host_devices", _probe("host_devices"), "open /dev/vda, /dev/sda, /dev/mem, /dev/kmsg, /dev/kvm, ..."),
    Case("open_by_handle_at", _probe("open_by_handle_at"), "open the host root by file handle (shocker)"),
    Case("keyctl", _probe("keyctl"), "reach uid 0's user keyring"),
    Case("add_key", _probe("add_key"), "add a key to uid 0's user keyring"),
    Case("ptrace_host", _probe("ptrace_host", '"$HOST_PID"'), "ptrace a host process"),
    Case("ptrace_init", _probe("ptrace_init"), "ptrace pid 1 of the step"),
    Case("bpf", _probe("bpf"), "bpf(BPF_MAP_CREATE)"),
    Case("perf_event_open", _probe("perf_event_open"), "perf_event_open on every process of a cpu"),
    Case("init_module", _probe("init_module"), "init_module"),
    Case("finit_module", _probe("finit_module"), "finit_module"),
    Case("kexec_load", _probe("kexec_load"), "kexec_load"),
    Case("reboot", _probe("reboot"), "reboot"),
    Case("settimeofday", _probe("settimeofday"), "settimeofday"),
    Case("swapon", _probe("swapon"), "swapon"),
    Case("self_exe", _probe("self_exe"), "write through /proc/self/exe"),
    Case("init_exe", _probe("init_exe"), "write through /proc/1/exe"),
    # last: where they succeed they change the mounts the cases after them would see
    Case("umount_masked", _probe("umount_masked"), "unmount the mask over /proc/kcore"),
    Case("umount_proc_shell", _UMOUNT_SHELL, "umount -l /proc from the shell"),
)
CASE_NAMES = tuple(c.name for c in CASES)

# Processes a RUN leaves behind that try to write into the root during later steps.
SURVIVOR_SLEEP = "sleep 313"  # what a survivor would still be running
SURVIVOR_NAMES = ("background", "setsid", "double_fork", "nohup")
_SURVIVOR_RUNS = (
    "(sleep 2; echo PWNED > /raced-background; : {mark}; sleep 313) >/dev/null 2>&1 &",
    "setsid sh -c 'sleep 2; echo PWNED > /raced-setsid; sleep 313 # {mark}' >/dev/null 2>&1 &",
    "sh -c '(setsid sh -c \"sleep 2; echo PWNED > /raced-double_fork; sleep 313 # {mark}\" &) &' >/dev/null 2>&1",
    "nohup sh -c 'trap \"\" HUP TERM INT; sleep 2; echo PWNED > /raced-nohup; sleep 313 # {mark}' >/dev/null 2>&1 &",
)


def corpus_dockerfile(base: str) -> str:
    lines = [f"FROM {base}", "ARG HOST_MARKER", "ARG HOST_PID", "COPY probe secret-halves /"]
    lines += [f"RUN {c.run}" for c in CASES]
    return "\n".join(lines) + "\n"


def survivors_dockerfile(base: str, mark: str) -> str:
    """Each left-behind process writes /raced-<name> 2 s after its RUN ended; the COPY and
    the last RUN come after that (it sleeps 4 s) and report what they find. ``mark`` is in
    every such process's command line (unique per run, so concurrent runs do not mix)."""
    lines = [f"FROM {base}"] + [f"RUN {r.format(mark=mark)}" for r in _SURVIVOR_RUNS]
    lines += ["COPY filler /filler",
              "RUN sleep 4; " + "; ".join(
                  f"if [ -e /raced-{n} ]; then echo 'PROBE survivor_{n} ESCAPED wrote-into-root'; "
                  f"else echo 'PROBE survivor_{n} blocked no-write'; fi" for n in SURVIVOR_NAMES)
              + f"; ps -o pid,args 2>/dev/null | grep {mark} | grep -v grep "
                "| sed 's/^/SURVIVOR-PS /' || true"]
    return "\n".join(lines) + "\n"


_LINE = re.compile(r"^PROBE (\S+) (blocked|ESCAPED|error)\b ?(.*)$", re.M)


def parse(output: str) -> dict[str, list[tuple[str, str]]]:
    """case -> [(verdict, detail), ...] from a build's output."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, verdict, detail in _LINE.findall(output):
        found.setdefault(name, []).append((verdict, detail.strip()))
    return found


def docker_archive_paths(tarball: Path) -> set[str]:
    """Every path in every layer of a ``docker save`` style archive (whiteouts included)."""
    paths: set[str] = set()
    with tarfile.open(tarball) as outer:
        for member in outer.getmembers():
            if not member.isfile() or not (member.name.endswith(".tar") or "/layer" in member.name
                                          or member.name.startswith("blobs/")):
                continue
            data = outer.extractfile(member)
            try:
                with tarfile.open(fileobj=data) as layer:
                    paths.update("/" + m.name.lstrip("./") for m in layer.getmembers())
            except tarfile.TarError:
                continue  # the config or manifest, not a layer
    return paths
