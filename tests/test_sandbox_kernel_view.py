"""What a RUN step sees of the kernel and of the builder, in chroot and userns isolation.

Each case starts a fresh builder process (``python -c RUNNER``) whose command
line carries a marker word, whose environment carries a secret, and which
holds an inheritable descriptor of a marker file, the way a CI runner's
executor could. The builder opens the sandbox for the isolation under test
(``userns`` re-executes it in a user namespace first, as the CLI does) and runs
probe scripts against a root whose /usr is the host's, bound read-only, so the
step has real tools (dash, coreutils, setcap, python3).

Expected values come from Docker's default container (moby
daemon/pkg/oci/defaults.go, runc's maskedPaths/readonlyPaths): the masked
files read empty, /proc/sys and /sys are read-only, and pid 1 is an init that
shows nothing of the executor.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pybuildless.sandbox import seccomp
from tests.buildkit import ROOT
from tests.test_userns import users  # noqa: F401  (fixture: throwaway users with subordinate ids)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the chroot sandbox and the test users need root"),
]

MARKER_WORD = "pblargvmarker"
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")

# Runs in the builder process under test: argv = isolation, work dir, marker word.
RUNNER = r"""
import os, sys, tempfile
from pathlib import Path
from pybuildless.fs.users import ResolvedUser
from pybuildless.sandbox import Mount, open_sandbox
from pybuildless.sandbox.userns import maybe_reexec

isolation = maybe_reexec(sys.argv[1])
if os.environ.get("PBL_NO_MOUNT_SETATTR"):
    from pybuildless.sandbox import _linux
    _linux.make_tree_readonly = lambda target: False  # as on a kernel before 5.12
work = Path(tempfile.mkdtemp(dir=sys.argv[2]))
leak = work / "pbl-leak-marker"
leak.write_text("builder's open file")
fd = os.open(leak, os.O_RDONLY)
os.set_inheritable(fd, True)  # what a careless parent hands down

root = work / "root"
for name in ("usr", "etc", "tmp", "root"):
    (root / name).mkdir(parents=True)
os.chmod(root / "tmp", 0o1777)
for name in ("bin", "lib", "lib64", "sbin"):
    os.symlink("usr/" + name, root / name)
(root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n")
(root / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")

env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
usr = [Mount("/usr", Path("/usr"), readonly=True)]
box = open_sandbox(isolation, root)
for name, user, network in (("kernel", ResolvedUser(0, 0, (), "/root", "root"), "default"),
                            ("work", ResolvedUser(0, 0, (), "/root", "root"), "none"),
                            ("user", ResolvedUser(1000, 1000, (), "/tmp", "user"), "none")):
    out = bytearray()
    code = box.run(["/bin/sh", "-c", os.environ["PBL_PROBE_" + name.upper()]], env=env, cwd="/", user=user,
                   stdout=out.extend, network=network, mounts=usr).exit_code
    sys.stdout.write(f"{name}.exit={code}\n")
    for line in out.decode(errors="replace").splitlines():
        sys.stdout.write(f"{name}.{line}\n")
box.close()
"""

# Writes that succeed would change the host: each writes a harmless value (the test restores
# core_pattern), and each reports "refused" when the kernel says no.
PROBE_KERNEL = r"""
try() { if (eval "$2") 2>/dev/null; then echo "$1=written"; else echo "$1=refused"; fi; }
try core_pattern 'echo x > /proc/sys/kernel/core_pattern'
try core_pattern_proc1 'echo x > /proc/1/root/proc/sys/kernel/core_pattern'
try core_pattern_self 'echo x > /proc/self/root/proc/sys/kernel/core_pattern'
try vm_swappiness 'cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness'
if [ -e /proc/sysrq-trigger ]; then try sysrq 'echo h > /proc/sysrq-trigger'; else echo sysrq=absent; fi
if [ -e /sys/kernel/uevent_helper ]; then try uevent_helper 'cat /sys/kernel/uevent_helper > /sys/kernel/uevent_helper'
else echo uevent_helper=absent; fi
try sys_create 'touch /sys/kernel/pbl-probe'
for f in kcore keys timer_list interrupts sched_debug timer_stats latency_stats; do
  echo "read_$f=$(head -c 4096 /proc/$f 2>/dev/null | wc -c)"
done
echo "acpi_entries=$(ls -A /proc/acpi 2>/dev/null | wc -l)"
echo "firmware_entries=$(ls -A /sys/firmware 2>/dev/null | wc -l)"
echo "rw_kernel_mounts=$(cut -d' ' -f5,6 /proc/self/mountinfo | grep -E '^/(sys|proc/(sys|bus|fs|irq|sysrq-trigger))(/| )' | grep -vE ' ro(,|$)' | cut -d' ' -f1 | tr '\n' ' ')"
echo "sys_is_ro=$(cut -d' ' -f5,6 /proc/self/mountinfo | grep '^/sys ' | cut -d' ' -f2 | cut -d, -f1)"
echo "cmdline=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "comm=$(cat /proc/1/comm)"
echo "status_name=$(grep '^Name:' /proc/1/status | cut -f2)"
if cat /proc/1/environ > /tmp/environ 2>/dev/null; then echo "environ_bytes=$(wc -c < /tmp/environ)"; else echo environ_bytes=refused; fi
if ls /proc/1/fd > /tmp/fds 2>/dev/null; then echo "init_fds=$(wc -l < /tmp/fds)"; else echo init_fds=refused; fi
try exe 'readlink /proc/1/exe > /dev/null'
try root 'ls /proc/1/root > /dev/null'
try mem 'head -c 1 /proc/1/mem > /dev/null'
# The patterns are written so that no argv of the probe (grep's included) matches them.
echo "secret_hits=$(cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/[0-9]*/task/*/environ 2>/dev/null | tr '\0' '\n' | grep -c 'PBL_SEC[R]ET_VALUE')"
echo "marker_hits=$(cat /proc/[0-9]*/cmdline /proc/[0-9]*/comm 2>/dev/null | tr '\0' '\n' | grep -c 'pblargv[m]arker')"
echo "leaked_fds=$(ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c 'pbl-leak-marker')"
echo "child_fds=$(ls /proc/self/fd | tr '\n' ' ')"
echo "processes=$(ls -d /proc/[0-9]* | wc -l)"
echo "seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)"
# Docker's profile refuses new user namespaces to a step without CAP_SYS_ADMIN; the kernel alone would allow it.
try userns 'unshare --user --map-root-user true'
try keyctl 'python3 -c "import ctypes, platform, sys; nr = {\"x86_64\": 250, \"aarch64\": 219}[platform.machine()]; sys.exit(ctypes.CDLL(None).syscall(nr, 0, -3, 0) == -1)"'
"""

# Ordinary root work a Dockerfile does (in a network namespace of its own, which rootless needs
# for raw sockets and low ports); leaves a setuid copy of id for the next probe.
PROBE_WORK = r"""
echo data > /tmp/owned && chown 1000:1000 /tmp/owned && echo "chown=$(stat -c %u:%g /tmp/owned)"
cp /usr/bin/id /tmp/capfile && setcap cap_net_raw+ep /tmp/capfile && echo "setcap=$(getcap /tmp/capfile)"
cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id && echo suid_made=yes
python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('raw_socket=ok')"
python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 80)); s.listen(); print('bind80=ok')"
"""

PROBE_USER = r"""
echo "uid=$(id -u)"
echo "suid_euid=$(/tmp/suid-id -u)"
"""


def run_builder(isolation: str, work: Path, secret: str, *, as_user=None,
                extra_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PBL_PROBE_KERNEL": PROBE_KERNEL, "PBL_PROBE_WORK": PROBE_WORK, "PBL_PROBE_USER": PROBE_USER,
           "PYBUILDLESS_TEST_SECRET": secret, **(extra_env or {})}
    argv = [sys.executable, "-c", RUNNER, isolation, str(work), MARKER_WORD]
    if as_user is None:
        proc = subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True,
                              timeout=120)
    else:
        proc = as_user.run(argv, env={**as_user.env(), **env}, timeout=120)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"{out}\n{err}"
    result = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    result["_stderr"] = err
    return result


def check_kernel_view(r: dict[str, str]) -> None:
    assert r["kernel.exit"] == "0", r
    for knob in ("core_pattern", "core_pattern_proc1", "core_pattern_self", "vm_swappiness", "sys_create"):
        assert r[f"kernel.{knob}"] == "refused", (knob, r)
    assert r["kernel.sysrq"] in ("refused", "absent") and r["kernel.uevent_helper"] in ("refused", "absent")
    for f in ("kcore", "keys", "timer_list", "interrupts", "sched_debug", "timer_stats", "latency_stats"):
        assert r[f"kernel.read_{f}"] == "0", (f, r)
    assert r["kernel.acpi_entries"] == "0" and r["kernel.firmware_entries"] == "0"
    assert r["kernel.rw_kernel_mounts"].strip() == "" and r["kernel.sys_is_ro"] == "ro"


def check_builder_invisible(r: dict[str, str]) -> None:
    assert r["kernel.cmdline"].strip() == "init"
    assert r["kernel.comm"] == "init" and r["kernel.status_name"] == "init"
    assert MARKER_WORD not in "".join(r[k] for k in r if k.startswith("kernel."))
    assert r["kernel.environ_bytes"] in ("refused", "0")
    assert r["kernel.init_fds"] in ("refused", "0")
    assert (r["kernel.exe"], r["kernel.root"], r["kernel.mem"]) == ("refused", "refused", "refused")
    assert r["kernel.secret_hits"] == "0" and r["kernel.marker_hits"] == "0" and r["kernel.leaked_fds"] == "0"
    # what ls itself holds: stdin, stdout, stderr and the directory it lists
    assert r["kernel.child_fds"].split() == ["0", "1", "2", "3"]
    # init, the shell and the shell's children only
    assert int(r["kernel.processes"]) <= 6


def check_seccomp(r: dict[str, str]) -> None:
    if seccomp.unavailable_reason() is not None:
        pytest.fail(f"this kernel cannot load seccomp filters ({seccomp.unavailable_reason()}); "
                    "the filter cannot be checked here")
    assert r["kernel.seccomp"] == "2"
    assert r["kernel.userns"] == "refused" and r["kernel.keyctl"] == "refused"


def check_root_work(r: dict[str, str]) -> None:
    assert r["work.exit"] == "0", r
    assert r["work.chown"] == "1000:1000"
    assert r["work.setcap"] == "/tmp/capfile cap_net_raw=ep"
    assert r["work.raw_socket"] == "ok" and r["work.bind80"] == "ok"
    assert (r["user.exit"], r["user.uid"], r["user.suid_euid"]) == ("0", "1000", "0"), r


@pytest.fixture
def host_core_pattern():
    before = CORE_PATTERN.read_bytes()
    yield before
    after = CORE_PATTERN.read_bytes()
    if after != before:
        CORE_PATTERN.write_bytes(before)
    assert after == before, "a RUN step changed the host's core_pattern"


@pytest.mark.parametrize("isolation", ["chroot", "userns"])
def test_kernel_view_and_invisible_builder_as_root(isolation: str, tmp_path: Path, host_core_pattern) -> None:
    secret = "PBL_SECRET_VALUE_" + secrets.token_hex(8)
    r = run_builder(isolation, tmp_path, secret)
    check_kernel_view(r)
    check_builder_invisible(r)
    check_seccomp(r)
    check_root_work(r)


def test_sys_read_only_without_mount_setattr(tmp_path: Path) -> None:
    """userns mode binds the host's /sys (a fresh sysfs needs the network namespace); without
    mount_setattr every sub-mount is remounted read-only one by one."""
    r = run_builder("userns", tmp_path, "PBL_SECRET_VALUE_" + secrets.token_hex(8),
                    extra_env={"PBL_NO_MOUNT_SETATTR": "1"})
    check_kernel_view(r)


@pytest.mark.slow
def test_kernel_view_rootless(users, host_core_pattern) -> None:  # noqa: F811
    full, _ = users
    work = full.workspace / "tmp"
    r = run_builder("userns", work, "PBL_SECRET_VALUE_" + secrets.token_hex(8), as_user=full)
    check_kernel_view(r)
    check_builder_invisible(r)
    check_seccomp(r)
    check_root_work(r)


# Two builds' worth of sandboxes in one builder without CAP_SYS_ADMIN (the plain-chroot fallback, as in an
# unprivileged container): one line. "filtered": the builder first gets a seccomp filter of its own while it
# may, then loses CAP_SYS_ADMIN, as a container's process does (runc loads the profile, then drops capabilities).
MESSAGES = r"""
import ctypes, logging, struct, sys, tempfile
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
from pybuildless.sandbox import ChrootSandbox, _linux, seccomp
from tests.test_sandbox import ENV, ROOT_USER, make_busybox_root

if sys.argv[2] == "filtered":
    seccomp.install(struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000))  # return ALLOW
    _linux.prctl(_linux.PR_CAPBSET_DROP, _linux.CAP_SYS_ADMIN)
    header, data = _linux._CapHeader(_linux._CAP_V3, 0), (_linux._CapData * 2)()
    assert _linux._capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~(1 << _linux.CAP_SYS_ADMIN)
    data[0].permitted &= ~(1 << _linux.CAP_SYS_ADMIN)
    assert _linux._capset(ctypes.byref(header), data) == 0
work = Path(tempfile.mkdtemp(dir=sys.argv[1]))
for i in range(2):
    with ChrootSandbox(make_busybox_root(work / f"r{i}")) as box:
        assert box.run(["/bin/sh", "-c", "echo step-ran"], env=ENV, cwd="/", user=ROOT_USER,
                       stdout=sys.stdout.buffer.write).exit_code == 0
        sys.stdout.buffer.flush()
"""


@pytest.mark.parametrize("builder", ["plain", "filtered"])
def test_one_line_when_steps_get_no_filter(builder: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-c", MESSAGES, str(tmp_path), builder]
    if builder == "plain":
        argv = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"] + argv
    proc = subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    assert out.count("step-ran") == 2
    lines = [line for line in out.splitlines() if "seccomp" in line]
    assert len(lines) == 1, out
    if builder == "plain":
        assert lines[0].startswith("WARNING ") and "without a seccomp filter" in lines[0]
        assert "CAP_SYS_ADMIN" in lines[0]
    else:
        assert lines[0].startswith("INFO ") and "this builder runs under" in lines[0]


# The reproduction from the issue that asked for all this: a Dockerfile any user could hand the build host.
ESCAPE_DOCKERFILE = """\
FROM {base}
RUN cp /proc/sys/kernel/core_pattern /cp && cat /cp > /proc/sys/kernel/core_pattern && echo WRITABLE
"""


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["chroot", "userns"])
def test_core_pattern_dockerfile_fails_to_build(isolation: str, tmp_path: Path, busybox_image: str,
                                                 host_core_pattern) -> None:
    from tests.buildkit import executor, write_context

    ctx = write_context(tmp_path / "ctx", {"Dockerfile": ESCAPE_DOCKERFILE.format(base=busybox_image)})
    proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--no-push",
                    "--isolation", isolation, check=False)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0, out
    assert "WRITABLE" not in out.splitlines() and "Read-only file system" in out, out
