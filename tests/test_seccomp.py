"""The RUN seccomp filter, loaded into real child processes of this (root) test process.

Expected outcomes come from Docker's default profile, moby/moby b985e2313a86,
vendor/github.com/moby/profiles/seccomp/default.json (cited below as
"profile"), evaluated for the capabilities a step keeps (RUN_CAPABILITIES:
no CAP_SYS_ADMIN, SYS_PTRACE, SYS_MODULE, SYS_BOOT, SYS_TIME, SYS_NICE,
SYS_PACCT, SYSLOG, BPF, PERFMON, DAC_READ_SEARCH) on a kernel >= 4.8.
Every blocked probe is first run without the filter, with arguments that
make it fail harmlessly, to show that EPERM under the filter is the filter's.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile

import pytest

from pybuildless.sandbox import seccomp
from pybuildless.sandbox._linux import RUN_CAPABILITIES
from pybuildless.sandbox.seccomp_profile import applicable_rules, kernel_version, NATIVE_ARCH, ALLOW
from pybuildless.sandbox.syscalls_table import SYSCALLS

HOST = platform.machine()
TABLE = SYSCALLS.get(HOST, {})
BUSYBOX = "/bin/busybox"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or seccomp.unavailable_reason() is not None,
                                reason="needs root and a kernel with seccomp filters")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _arg(value: int | bytes | None) -> ctypes.c_long | ctypes.c_char_p:
    return ctypes.c_char_p(value) if isinstance(value, bytes) or value is None else ctypes.c_long(value)


def raw(nr: int, *args: int | bytes | None) -> int:
    """syscall(nr, ...): the result, or -errno."""
    ctypes.set_errno(0)
    result = _syscall(ctypes.c_long(nr), *(_arg(a) for a in args))
    return -ctypes.get_errno() if result == -1 else result


def call(name: str, *args: int | bytes | None) -> int:
    return raw(TABLE[name], *args)


def in_child(probe, *, program: bytes | None = None) -> int:
    """Run ``probe()`` in a forked child, under ``program`` if given; return its int result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            if program is not None:
                seccomp.install(program)
            result = int(probe())
            os.write(write_end, struct.pack("<q", result))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert len(data) == 8, f"probe child wrote {data!r}, status {status:#x}"
    return struct.unpack("<q", data)[0]


def filtered(probe) -> int:
    return in_child(probe, program=seccomp.run_step_program())


def _clone_with(flags: int):
    def probe() -> int:
        result = call("clone", flags | signal.SIGCHLD, 0, 0, 0, 0)
        if result == 0:
            os._exit(0)  # the cloned child
        if result > 0:
            os.waitpid(result, 0)
            return 0
        return result
    return probe


CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MISSING = b"/nonexistent-seccomp-probe"

# Each probe fails harmlessly without the filter (bad magic, bad fd, missing
# path, invalid op) with an errno other than EPERM.
BLOCKED = {
    # Not in the profile at all: the default action SCMP_ACT_ERRNO, defaultErrnoRet 1.
    "keyctl": lambda: call("keyctl", 0xFFFF, 0, 0, 0, 0),
    "add_key": lambda: call("add_key", None, None, None, 0, 0),
    "request_key": lambda: call("request_key", None, None, None, 0),
    "swapon": lambda: call("swapon", MISSING, 0),
    "swapoff": lambda: call("swapoff", MISSING),
    "kexec_load": lambda: call("kexec_load", 0, 0, None, 0xFFFFFFFF),
    "pivot_root": lambda: call("pivot_root", MISSING, MISSING),
    # Allowed only with CAP_SYS_ADMIN (profile: includes caps CAP_SYS_ADMIN).
    "mount": lambda: call("mount", b"none", MISSING, b"tmpfs", 0, None),
    "umount2": lambda: call("umount2", MISSING, 0),
    "unshare(CLONE_NEWUSER)": lambda: call("unshare", CLONE_NEWUSER),
    "unshare(CLONE_NEWNS)": lambda: call("unshare", CLONE_NEWNS),
    "setns": lambda: call("setns", -1, 0),
    "bpf": lambda: call("bpf", 0xFFFF, None, 0),
    "perf_event_open": lambda: call("perf_event_open", None, 0, -1, -1, 0),
    "fsopen": lambda: call("fsopen", b"no-such-fs", 0),
    "open_tree": lambda: call("open_tree", -100, MISSING, 0),
    "sethostname": lambda: call("sethostname", b"x", -1),
    "syslog": lambda: call("syslog", 10, None, 0),  # SYSLOG_ACTION_SIZE_BUFFER
    # clone without CAP_SYS_ADMIN: arg0 masked with the namespace flags must be 0.
    "clone(CLONE_NEWNS)": _clone_with(CLONE_NEWNS),
    "clone(CLONE_NEWUSER)": _clone_with(CLONE_NEWUSER),
    # CAP_DAC_READ_SEARCH: open_by_handle_at (the "shocker" escape).
    "open_by_handle_at": lambda: call("open_by_handle_at", -1, None, 0),
    # CAP_SYS_MODULE.
    "init_module": lambda: call("init_module", None, 0, b""),
    "finit_module": lambda: call("finit_module", -1, b"", 0),
    "delete_module": lambda: call("delete_module", b"no_such_module_xyz", os.O_NONBLOCK),
    # CAP_SYS_BOOT: reboot with a wrong magic number.
    "reboot": lambda: call("reboot", 0, 0, 0, None),
    # CAP_SYS_TIME: settimeofday(NULL, NULL) changes nothing; an invalid clock.
    "settimeofday": lambda: call("settimeofday", None, None),
    "clock_settime": lambda: call("clock_settime", 0x7FFF, None),
    # CAP_SYS_PTRACE (ptrace itself is allowed from kernel 4.8, see ALLOWED).
    "kcmp": lambda: call("kcmp", os.getpid(), os.getpid(), 0, 0, 0),
    "pidfd_getfd": lambda: call("pidfd_getfd", -1, 0, 0),
    "process_madvise": lambda: call("process_madvise", -1, None, 0, 0, 0),
    # CAP_SYS_PACCT, CAP_SYS_NICE.
    "acct": lambda: call("acct", MISSING + b"/x"),
    "get_mempolicy": lambda: call("get_mempolicy", None, None, 0, None, 0),
    # socket: every family but AF_ALG (38) and AF_VSOCK (40); the kernel reads the family as an int.
    "socket(AF_ALG)": lambda: call("socket", 38, 5, 0),
    "socket(AF_VSOCK)": lambda: call("socket", 40, 1, 0),
    "socket(AF_VSOCK | 1 << 32)": lambda: call("socket", 40 | 1 << 32, 1, 0),
    # personality: only 0, 0x8, 0x20000, 0x20008 and 0xffffffff.
    "personality(ADDR_NO_RANDOMIZE)": lambda: call("personality", 0x0040000),
    "personality(READ_IMPLIES_EXEC)": lambda: call("personality", 0x0400000),
}


@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_blocked_syscalls_get_eperm(name):
    probe = BLOCKED[name]
    assert in_child(probe) != -errno.EPERM, "the probe must fail differently without the filter"
    assert filtered(probe) == -errno.EPERM


def _close_if_fd(result: int) -> int:
    if result >= 0:
        os.close(result)
        return 0
    return result


def _mknod_fifo() -> int:
    path = b"/dev/shm/.seccomp-fifo-%d" % os.getpid()
    result = call("mknodat", -100, path, 0o010600, 0)
    if result == 0:
        os.unlink(path)
    return result


def _fork_and_wait() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) - 7


ALLOWED = {
    # In the unconditional allow list.
    "getpid": (lambda: call("getpid") == os.getpid(), True),
    "setuid(0)": (lambda: call("setuid", 0), 0),
    "mknod(fifo)": (lambda: _mknod_fifo(), 0),
    # ptrace, process_vm_readv: allowed from kernel 4.8 (profile: includes minKernel 4.8).
    "ptrace(PEEKDATA, no such pid)": (lambda: call("ptrace", 2, 0x3FFFFFFF, 0, 0), -errno.ESRCH),
    # chroot: CAP_SYS_CHROOT is kept.
    "chroot(missing)": (lambda: call("chroot", MISSING), -errno.ENOENT),
    # socket: AF_INET raw (CAP_NET_RAW kept), family 39 (between AF_ALG and AF_VSOCK).
    "socket(AF_INET, SOCK_RAW)": (lambda: _close_if_fd(call("socket", 2, 3, 1)), 0),
    "socket(AF_UNIX)": (lambda: _close_if_fd(call("socket", 1, 1, 0)), 0),
    # personality: the query and PER_LINUX32 are on the list.
    "personality(0xffffffff)": (lambda: call("personality", 0xFFFFFFFF) >= 0, True),
    "personality(PER_LINUX32)": (lambda: call("personality", 0x0008) >= 0, True),
    # clone without namespace flags (fork's own clone), and os.fork.
    "clone(SIGCHLD)": (_clone_with(0), 0),
    "os.fork": (lambda: _fork_and_wait(), 0),
}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allowed_syscalls_work(name):
    probe, expected = ALLOWED[name]
    assert filtered(probe) == expected


def test_socket_family_39_is_not_the_filters_business():
    # Family 39 is allowed by its own rule; whatever the kernel answers, it answers the same under the filter.
    probe = lambda: _close_if_fd(call("socket", 39, 1, 0))  # noqa: E731
    assert filtered(probe) == in_child(probe) != -errno.EPERM


def test_clone3_gets_enosys_so_libc_falls_back_to_clone():
    # profile: clone3 -> SCMP_ACT_ERRNO with errnoRet 38 unless CAP_SYS_ADMIN.
    assert filtered(lambda: call("clone3", None, 0)) == -errno.ENOSYS
    assert in_child(lambda: call("clone3", None, 0)) != -errno.ENOSYS


def test_numbers_past_the_profile_get_enosys_and_gaps_eperm():
    # runc's patchbpf stub (libcontainer/seccomp/patchbpf/enosys_linux.go): ENOSYS above the
    # largest number the filter names, the default action below it.
    named = {TABLE[n] for rule in applicable_rules(NATIVE_ARCH[HOST], RUN_CAPABILITIES, kernel_version())
             for n in rule.names if n in TABLE}
    # The last unused number below the largest named one (both ABIs leave 387..423 or so free).
    gap = max(nr for nr in range(max(named)) if nr not in TABLE.values())
    assert filtered(lambda: raw(max(named) + 1)) == -errno.ENOSYS
    assert filtered(lambda: raw(1000)) == -errno.ENOSYS
    assert filtered(lambda: raw(gap)) == -errno.EPERM
    assert in_child(lambda: raw(gap)) == -errno.ENOSYS


@pytest.mark.skipif(HOST != "x86_64", reason="the x32 ABI exists on x86_64 only")
def test_x32_abi_is_refused():
    getpid_x32 = 0x40000000 | SYSCALLS["x86_64"]["getpid"]
    assert filtered(lambda: raw(getpid_x32)) == -errno.EPERM


def _int80_caller():
    """A function running ``int 0x80`` (the i386 ABI) with eax=nr, ebx=arg, returning eax sign-extended."""
    # push rbx; mov eax, edi; mov ebx, esi; int 0x80; pop rbx; movsxd rax, eax; ret
    code = bytes.fromhex("53 89f8 89f3 cd80 5b 4863c0 c3")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return page, ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_int, ctypes.c_int)(address)


@pytest.mark.skipif(HOST != "x86_64", reason="the i386 ABI is served by x86_64 kernels only")
def test_i386_abi_follows_the_same_profile():
    page, int80 = _int80_caller()
    i386 = SYSCALLS["i386"]
    try:
        control = in_child(lambda: int80(i386["getpid"], 0) == os.getpid())
    except AssertionError:
        pytest.skip("this kernel has no i386 emulation (int 0x80 faults)")
    assert control == 1
    assert filtered(lambda: int80(i386["getpid"], 0) == os.getpid()) == 1
    # umount(NULL): EFAULT without the filter; keyctl with an invalid op: EOPNOTSUPP.
    for name, arg in (("umount", 0), ("keyctl", 0xFFFF)):
        assert in_child(lambda: int80(i386[name], arg)) != -errno.EPERM
        assert filtered(lambda: int80(i386[name], arg)) == -errno.EPERM
    assert filtered(lambda: int80(i386["clone3"], 0)) == -errno.ENOSYS
    page.close()


def test_foreign_abi_is_killed_by_the_kernel():
    # A filter for the other architecture: every syscall of this process is then "foreign".
    other = "aarch64" if HOST == "x86_64" else "x86_64"
    program = seccomp.docker_default_program(other, capabilities=RUN_CAPABILITIES)
    pid = os.fork()
    if pid == 0:
        try:
            seccomp.install(program)
        finally:
            os._exit(3)  # exit_group itself is foreign: the kernel kills instead
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def _preexec():
    seccomp.install(seccomp.run_step_program())


def test_no_new_privs_stays_off_so_setuid_binaries_elevate():
    status = subprocess.run([BUSYBOX, "cat", "/proc/self/status"], preexec_fn=_preexec,
                            capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2"  # SECCOMP_MODE_FILTER
    assert fields["NoNewPrivs"].strip() == "0"


def test_setuid_binary_still_elevates_under_the_filter():
    # A setuid-root copy of the python binary, run by uid 1000: euid 0 under the filter, and
    # (the control) euid 1000 once no_new_privs is set, which the filter must not do.
    binary = os.path.realpath("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        if os.statvfs(tmp).f_flag & os.ST_NOSUID:
            pytest.skip(f"{tmp} is mounted nosuid")
        os.chmod(tmp, 0o755)
        setuid_python = shutil.copy(binary, os.path.join(tmp, "python3"))
        os.chmod(setuid_python, 0o4755)

        def run(no_new_privs: bool) -> str:
            def preexec() -> None:
                if no_new_privs:
                    _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
                _preexec()
                os.setgid(1000)
                os.setuid(1000)
            return subprocess.run([setuid_python, "-S", "-c", "import os; print(os.getuid(), os.geteuid())"],
                                  preexec_fn=preexec, capture_output=True, text=True, check=True).stdout.strip()

        assert run(no_new_privs=False) == "1000 0"
        assert run(no_new_privs=True) == "1000 1000"


def test_busybox_pipeline_runs_under_the_filter(tmp_path):
    script = ("echo hello | tr a-z A-Z > out; chown 1000:1000 out; mkfifo fifo; ls -n out | cut -c1-30;"
              " cat out; (sleep 0 &); wait; id -u")
    result = subprocess.run([BUSYBOX, "sh", "-c", script], cwd=tmp_path, preexec_fn=_preexec,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert " 1000 " in lines[0] and lines[1:] == ["HELLO", "0"]


def test_python_starts_threads_and_spawns_under_the_filter(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    code = (
        "import os, subprocess, threading, socket\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"  # clone3 -> ENOSYS -> clone
        "assert subprocess.run(['/bin/true']).returncode == 0\n"  # posix_spawn
        f"os.setxattr({str(target)!r}, 'user.probe', b'1'); os.chown({str(target)!r}, 1000, 1000)\n"
        "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()\n"
        "os.setuid(1000); print('ok', os.getuid())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], preexec_fn=_preexec, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "ok 1000"
    assert os.getxattr(target, "user.probe") == b"1" and target.stat().st_uid == 1000


# --- the program itself ----------------------------------------------------------------------------------

def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """A classic-BPF interpreter for the instructions a seccomp filter may use (linux/filter.h)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("<HBBI", program, offset) for offset in range(0, len(program), 8)]
    pc = acc = 0
    for _ in range(len(insns)):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: acc & k != 0}[code]
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("program ran off its end")


ALLOW_RET, EPERM_RET, ENOSYS_RET = 0x7FFF0000, 0x50000 | errno.EPERM, 0x50000 | errno.ENOSYS


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_program_size_and_every_number_against_the_rules(machine):
    program = seccomp.docker_default_program(machine, capabilities=RUN_CAPABILITIES)
    assert len(program) % 8 == 0 and len(program) // 8 <= seccomp.BPF_MAXINSNS
    for abi in seccomp.HOST_ABIS[machine]:
        table = SYSCALLS[abi.table]
        rules = applicable_rules(NATIVE_ARCH[machine], RUN_CAPABILITIES, kernel_version())
        plain = {table[n] for r in rules if r.action == ALLOW and not r.args for n in r.names if n in table}
        conditional = {table[n] for r in rules if r.args or r.action != ALLOW for n in r.names if n in table}
        private = {nr for nr in plain if abi.private_from is not None and nr >= abi.private_from}
        largest = max((plain | conditional) - private)
        for nr in range(largest + 64):
            verdict = run_bpf(program, nr, abi.audit_arch)
            if nr in conditional:
                continue
            expected = ALLOW_RET if nr in plain else ENOSYS_RET if nr > largest else EPERM_RET
            assert verdict == expected, (abi.table, nr)
        for name in ("mount", "bpf", "keyctl", "kexec_load", "init_module", "reboot"):
            assert run_bpf(program, table[name], abi.audit_arch) == EPERM_RET, name
        clone = table["clone"]
        assert run_bpf(program, clone, abi.audit_arch, (0x11 | 0x01200000, 0, 0, 0, 0, 0)) == ALLOW_RET
        for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
            assert run_bpf(program, clone, abi.audit_arch, (flag | 0x11, 0, 0, 0, 0, 0)) == EPERM_RET
        assert run_bpf(program, table["clone3"], abi.audit_arch) == ENOSYS_RET
        if abi.table == "arm":
            # profile: set_tls, cacheflush, breakpoint allowed on arches arm, arm64; the other
            # ARM-private calls are not named, so EPERM.
            assert private == {table[n] for n in ("set_tls", "cacheflush", "breakpoint")}
            for nr in range(abi.private_from, abi.private_from + 16):
                assert run_bpf(program, nr, abi.audit_arch) == (ALLOW_RET if nr in private else EPERM_RET)
    assert run_bpf(program, 0, 0x12345678) == seccomp.SECCOMP_RET_KILL_PROCESS


def test_capabilities_open_their_rules():
    # With CAP_SYS_ADMIN kept, the profile's CAP_SYS_ADMIN rule allows mount, unshare and clone3.
    program = seccomp.docker_default_program("x86_64", capabilities=RUN_CAPABILITIES | {21})
    table = SYSCALLS["x86_64"]
    for name in ("mount", "unshare", "clone3"):
        assert run_bpf(program, table[name], seccomp.AUDIT_ARCH_X86_64) == ALLOW_RET, name
    assert run_bpf(program, table["clone"], seccomp.AUDIT_ARCH_X86_64, (0x10000000, 0, 0, 0, 0, 0)) == ALLOW_RET
    assert run_bpf(program, table["reboot"], seccomp.AUDIT_ARCH_X86_64) == EPERM_RET


def test_unknown_architecture_is_an_error():
    with pytest.raises(seccomp.SeccompUnsupported, match="riscv64"):
        seccomp.docker_default_program("riscv64", capabilities=RUN_CAPABILITIES)


def test_program_is_built_once():
    assert seccomp.run_step_program() is seccomp.run_step_program()
