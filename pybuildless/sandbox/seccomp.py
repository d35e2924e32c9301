"""A seccomp filter equivalent to Docker's default profile, for RUN steps.

The classic-BPF program is generated here rather than by libseccomp: no native
dependency (the executor image is FROM scratch), well under a millisecond to load per step,
and the program can be tested instruction by instruction. The rules are in
seccomp_profile (transcribed from moby/moby b985e2313a86), the syscall numbers
in syscalls_table (generated from the kernel headers by tools/gen_syscalls.py).

Layout of the program (seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8*i):

1. the ABI (``arch``) selects a section; any other ABI is killed, as
   libseccomp's default bad-arch action does. As in Docker's profile
   (archMap: x86_64 with x86, aarch64 with arm) a host also serves its
   32-bit ABI, which runs 32-bit images natively; the x32 ABI
   (nr | 0x40000000), also in Docker's x86_64 entry, is refused outright.
2. the few syscalls whose rules look at arguments (clone, socket,
   personality) or return another errno (clone3) jump to their own blocks;
3. numbers above the largest one the profile names get ENOSYS, so that a
   libc newer than the profile falls back instead of failing (what runc's
   patchbpf stub does: libcontainer/seccomp/patchbpf/enosys_linux.go at
   opencontainers/runc 76d9cf5da568);
4. a binary search over the allowed ranges returns ALLOW or EPERM.

Argument checks compare the low 32 bits only. The kernel reads socket's family
and personality's persona as 32-bit ints, so that is what must be checked
(a 64-bit compare as libseccomp does would let socket(AF_VSOCK | 1 << 32)
through as "greater than AF_VSOCK"); clone's namespace mask has no high bits.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from dataclasses import dataclass

from pybuildless.sandbox._linux import RUN_CAPABILITIES
from pybuildless.sandbox.seccomp_profile import (
    ALLOW, DEFAULT_ERRNO, NATIVE_ARCH, ArgCheck, Rule, applicable_rules, kernel_version,
)
from pybuildless.sandbox.syscalls_table import SYSCALLS

BPF_MAXINSNS = 4096

# Return values (linux/seccomp.h).
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (linux/bpf_common.h): class | size/op | source.
_LD_W_ABS = 0x20
_JMP_JA = 0x05
_JMP_JEQ_K, _JMP_JGT_K, _JMP_JGE_K, _JMP_JSET_K = 0x15, 0x25, 0x35, 0x45
_ALU_AND_K = 0x54
_RET_K = 0x06

_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARGS = 0, 4, 16

# linux/audit.h
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028
X32_SYSCALL_BIT = 0x40000000
ARM_PRIVATE_BASE = 0x0F0000  # __ARM_NR_BASE: set_tls, cacheflush... sit above the regular table


class SeccompUnsupported(RuntimeError):
    """No filter can be generated for this architecture."""


@dataclass(frozen=True)
class Abi:
    """A syscall ABI the seccomp filter recognises by its audit arch."""

    audit_arch: int
    table: str  # key of SYSCALLS
    refuse_from: int | None = None  # numbers from here on are another ABI (x32)
    private_from: int | None = None  # numbers from here on are not part of the regular table


HOST_ABIS: dict[str, tuple[Abi, ...]] = {
    "x86_64": (Abi(AUDIT_ARCH_X86_64, "x86_64", refuse_from=X32_SYSCALL_BIT), Abi(AUDIT_ARCH_I386, "i386")),
    "aarch64": (Abi(AUDIT_ARCH_AARCH64, "aarch64"), Abi(AUDIT_ARCH_ARM, "arm", private_from=ARM_PRIVATE_BASE)),
}


def _ret_errno(code: int) -> int:
    return SECCOMP_RET_ERRNO | (code & 0xFFFF)


def _ret(action: str | int) -> int:
    return SECCOMP_RET_ALLOW if action == ALLOW else _ret_errno(int(action))


class _Assembler:
    """Instructions with symbolic forward jumps; ``assemble`` resolves and encodes them."""

    def __init__(self) -> None:
        self.insns: list[tuple[int, int, int | str, int | str]] = []
        self.labels: dict[str, int] = {}
        self._fresh = 0

    def new_label(self) -> str:
        self._fresh += 1
        return f"L{self._fresh}"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def emit(self, code: int, k: int = 0, jt: int | str = 0, jf: int | str = 0) -> None:
        self.insns.append((code, k, jt, jf))

    def jump(self, label: str) -> None:
        self.insns.append((_JMP_JA, 0, label, 0))  # jt slot carries the label; k is filled in

    def assemble(self) -> bytes:
        out = bytearray()
        for position, (code, k, jt, jf) in enumerate(self.insns):
            if code == _JMP_JA and isinstance(jt, str):
                k, jt = self.labels[jt] - position - 1, 0
            jt, jf = (self.labels[j] - position - 1 if isinstance(j, str) else j for j in (jt, jf))
            if not (0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF):
                raise AssertionError(f"BPF jump out of range at instruction {position}")
            out += struct.pack("<HBBI", code, jt, jf, k)  # every supported ABI is little-endian
        return bytes(out)


def _search(segments: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Binary search over ``[(first_nr, return_value)]`` (sorted, first_nr of the first = lower bound)."""
    if len(segments) == 1:
        return [(_RET_K, segments[0][1], 0, 0)]
    middle = len(segments) // 2
    left, right = _search(segments[:middle]), _search(segments[middle:])
    pivot = segments[middle][0]
    if len(left) <= 255:
        return [(_JMP_JGE_K, pivot, len(left), 0), *left, *right]
    return [(_JMP_JGE_K, pivot, 0, 1), (_JMP_JA, len(left), 0, 0), *left, *right]


def _emit_check(asm: _Assembler, check: ArgCheck, fail: str) -> None:
    if not (0 <= check.value <= 0xFFFFFFFF and 0 <= check.mask <= 0xFFFFFFFF):
        raise AssertionError(f"argument check wider than 32 bits: {check}")
    asm.emit(_LD_W_ABS, _OFFSET_ARGS + 8 * check.index)
    if check.op == "eq":
        asm.emit(_JMP_JEQ_K, check.value, 0, fail)
    elif check.op == "lt":
        asm.emit(_JMP_JGE_K, check.value, fail, 0)
    elif check.op == "gt":
        asm.emit(_JMP_JGT_K, check.value, 0, fail)
    elif check.op == "masked_eq" and check.value == 0:
        asm.emit(_JMP_JSET_K, check.mask, fail, 0)
    elif check.op == "masked_eq":
        asm.emit(_ALU_AND_K, check.mask)
        asm.emit(_JMP_JEQ_K, check.value, 0, fail)
    else:
        raise AssertionError(f"unknown comparison {check.op}")


def _emit_section(asm: _Assembler, abi: Abi, rules: tuple[Rule, ...]) -> None:
    table = SYSCALLS[abi.table]
    by_number: dict[int, list[Rule]] = {}
    for rule in rules:
        for name in rule.names:
            if name in table:  # a name this ABI lacks is skipped, as libseccomp does
                by_number.setdefault(table[name], []).append(rule)
    private = {nr for nr in by_number if abi.private_from is not None and nr >= abi.private_from}
    allowed = {nr for nr, rs in by_number.items()
               if nr not in private and any(r.action == ALLOW and not r.args for r in rs)}
    special = {nr: rs for nr, rs in sorted(by_number.items()) if nr not in allowed}
    largest = max(set(by_number) - private)
    deny = _ret_errno(DEFAULT_ERRNO)

    asm.emit(_LD_W_ABS, _OFFSET_NR)
    if abi.refuse_from is not None:
        asm.emit(_JMP_JGE_K, abi.refuse_from, 0, 1)
        asm.emit(_RET_K, deny)
    blocks = {nr: asm.new_label() for nr in special}
    for nr, block in blocks.items():
        asm.emit(_JMP_JEQ_K, nr, block, 0)
    if abi.private_from is not None:
        asm.emit(_JMP_JGE_K, abi.private_from, 0, 1)
        asm.emit(_RET_K, deny)
    asm.emit(_JMP_JGT_K, largest, 0, 1)
    asm.emit(_RET_K, _ret_errno(errno.ENOSYS))
    search = asm.new_label()
    asm.jump(search)

    for nr, block in blocks.items():
        asm.label(block)
        for rule in special[nr]:
            next_rule = asm.new_label()
            for check in rule.args:
                _emit_check(asm, check, next_rule)
            asm.emit(_RET_K, _ret(rule.action))
            asm.label(next_rule)
        asm.emit(_RET_K, deny)

    # Ranges of equal outcome; numbers handled above take their neighbour's so ranges merge.
    segments: list[tuple[int, int]] = []
    for nr in range(largest + 1):
        verdict = SECCOMP_RET_ALLOW if nr in allowed else deny
        if nr in special:
            verdict = segments[-1][1] if segments else verdict
        if not segments or segments[-1][1] != verdict:
            segments.append((nr, verdict))
    asm.label(search)
    for insn in _search(segments):
        asm.emit(*insn)


@functools.lru_cache(maxsize=8)
def docker_default_program(machine: str | None = None, *, capabilities: frozenset[int]) -> bytes:
    """The filter (struct sock_filter[], 8 bytes an instruction) for a step keeping ``capabilities``.

    ``machine`` is an ``os.uname().machine`` value, the current one by default.
    Raises SeccompUnsupported for an architecture without a syscall table.
    """
    machine = machine or os.uname().machine
    if machine not in HOST_ABIS:
        raise SeccompUnsupported(f"no seccomp syscall table for architecture {machine}")
    rules = applicable_rules(NATIVE_ARCH[machine], capabilities, kernel_version())
    asm = _Assembler()
    asm.emit(_LD_W_ABS, _OFFSET_ARCH)
    sections = [(abi, asm.new_label()) for abi in HOST_ABIS[machine]]
    for abi, label in sections:
        asm.emit(_JMP_JEQ_K, abi.audit_arch, 0, 1)
        asm.jump(label)
    asm.emit(_RET_K, SECCOMP_RET_KILL_PROCESS)
    for abi, label in sections:
        asm.label(label)
        _emit_section(asm, abi, rules)
    program = asm.assemble()
    if len(program) // 8 > BPF_MAXINSNS:
        raise AssertionError(f"seccomp program has {len(program) // 8} instructions, over {BPF_MAXINSNS}")
    return program


def run_step_program() -> bytes:
    """The filter for RUN steps on this machine (built once, then cached)."""
    return docker_default_program(None, capabilities=RUN_CAPABILITIES)


# --- loading -------------------------------------------------------------------------------------------

PR_GET_SECCOMP, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 21, 22, 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Resolved now: install() runs in a freshly forked child that must not import or load anything.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def install(program: bytes) -> None:
    """Load ``program`` as this thread's seccomp filter; it is inherited by children and kept across exec.

    Call it last before exec: the filter refuses mount, pivot_root, unshare,
    sethostname... The kernel requires CAP_SYS_ADMIN in the current user
    namespace (or no_new_privs, deliberately not set here: setuid binaries
    such as su must keep working in a step). Raises OSError with the errno.
    """
    count = len(program) // 8
    if len(program) % 8 or not 0 < count <= BPF_MAXINSNS:
        raise ValueError(f"not a BPF program: {len(program)} bytes")
    code = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.addressof(code))
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {os.strerror(err)}")


def unavailable_reason() -> str | None:
    """None when a filter can be installed here, else why not (for one warn-level line)."""
    if os.uname().machine not in HOST_ABIS:
        return f"no seccomp syscall table for architecture {os.uname().machine}"
    if _prctl(PR_GET_SECCOMP, 0, None, 0, 0) < 0:
        return "the kernel has no seccomp support (CONFIG_SECCOMP)"
    # Probing with a NULL program: EFAULT means filters are understood, EINVAL that they are not.
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, None, 0, 0) == 0:
        raise AssertionError("prctl accepted a NULL seccomp program")
    err = ctypes.get_errno()
    if err == errno.EINVAL:
        return "the kernel has no seccomp filter support (CONFIG_SECCOMP_FILTER)"
    if err != errno.EFAULT:
        return f"seccomp filters cannot be loaded: {os.strerror(err)}"
    return None
