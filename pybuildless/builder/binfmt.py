"""Can this kernel run another architecture's programs? (binfmt_misc handlers)

A RUN step for a foreign platform works only when the kernel hands that
architecture's ELF files to an emulator. Inside a stage's root the emulator's
path does not exist, so the handler must have the ``F`` (fix binary) flag: the
kernel opened the interpreter when it was registered and uses that open file.
Debian's ``qemu-user-static`` registers such handlers (``flags: POF``).

A handler file under /proc/sys/fs/binfmt_misc reads (Documentation/admin-guide/binfmt-misc.rst)::

    enabled
    interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
    flags: POF
    offset 0
    magic 7f454c460201010000000000000000000200b700
    mask ffffffffffffff00fffffffffffffffffeffffff

A handler serves an architecture when its magic, under its mask, matches the
start of an ELF executable header for that architecture.

Handlers are kernel-wide, but the directory listing them is a filesystem of its
own (binfmt_misc) that a container's fresh /proc does not have: inside a Docker,
podman or Kubernetes container /proc/sys/fs/binfmt_misc is an empty directory
while the host's handlers still apply. When that directory is not mounted, the
kernel is asked directly: a few bytes of a static program for the architecture
(it only exits) are executed in a child chrooted into an empty directory, where
only a handler with the F flag can still reach its emulator.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pybuildless.image.descriptor import Platform

BINFMT_DIR_ENV = "PYBUILDLESS_BINFMT_DIR"  # another directory to read handlers from (tests, odd mounts)
DEFAULT_BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# OCI/Go architecture -> (ELF class: 1=32-bit 2=64-bit, data: 1=little 2=big endian, e_machine),
# from the ELF specification's e_machine table (EM_X86_64=62, EM_AARCH64=183, ...).
_ELF = {
    "amd64": (2, 1, 62),
    "386": (1, 1, 3),
    "arm64": (2, 1, 183),
    "arm": (1, 1, 40),
    "ppc64le": (2, 1, 21),
    "ppc64": (2, 2, 21),
    "s390x": (2, 2, 22),
    "riscv64": (2, 1, 243),
    "mips64le": (2, 1, 8),
    "mips64": (2, 2, 8),
    "loong64": (2, 1, 258),
}
# Architectures a host kernel runs without any handler (amd64 kernels run 32-bit x86 too).
_NATIVE_EXTRA = {"amd64": {"386"}}


@dataclass(frozen=True)
class Handler:
    """One binfmt_misc handler as the kernel lists it under /proc/sys/fs/binfmt_misc."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes

    def matches(self, header: bytes) -> bool:
        if self.offset + len(self.magic) > len(header):
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        sample = header[self.offset:self.offset + len(self.magic)]
        return all((s & m) == (g & m) for s, m, g in zip(sample, mask, self.magic))


def elf_header(architecture: str) -> bytes | None:
    """The first 20 bytes of an ELF executable for ``architecture``, or None if unknown."""
    spec = _ELF.get(architecture)
    if spec is None:
        return None
    elf_class, data, machine = spec
    order = "little" if data == 1 else "big"
    ident = bytes([0x7F, 0x45, 0x4C, 0x46, elf_class, data, 1, 0]) + bytes(8)
    return ident + (2).to_bytes(2, order) + machine.to_bytes(2, order)  # e_type ET_EXEC, e_machine


def _parse(path: Path) -> Handler | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    enabled = False
    for line in text.splitlines():
        if line.strip() == "enabled":
            enabled = True
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    if "magic" not in fields:
        return None  # an extension-based handler ("extension .jar") never matches ELF files
    try:
        return Handler(path.name, enabled, fields.get("interpreter", ""), fields.get("flags", ""),
                       int(fields.get("offset", "0")), bytes.fromhex(fields["magic"]),
                       bytes.fromhex(fields.get("mask", "")))
    except ValueError:
        return None


def handlers_dir() -> Path:
    return Path(os.environ.get(BINFMT_DIR_ENV) or DEFAULT_BINFMT_DIR)


def read_handlers(directory: Path | None = None) -> list[Handler]:
    directory = directory or handlers_dir()
    status = directory / "status"
    if status.exists() and status.read_text().strip() != "enabled":
        return []  # binfmt_misc switched off as a whole
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []  # not mounted, or not readable here
    found = []
    for name in names:
        if name in ("register", "status"):
            continue
        handler = _parse(directory / name)
        if handler is not None:
            found.append(handler)
    return found


def runs_natively(platform: Platform, host: Platform) -> bool:
    return platform.os == host.os and (platform.architecture == host.architecture
                                       or platform.architecture in _NATIVE_EXTRA.get(host.architecture, ()))


def is_mounted(directory: Path) -> bool:
    """binfmt_misc mounted there (it always has ``register`` and ``status``), not an empty mount point."""
    return (directory / "register").exists() or (directory / "status").exists()


def emulator_for(platform: Platform, directory: Path | None = None) -> Handler | None:
    """The enabled handler with the F flag that runs ``platform``'s executables, if any.

    Without a directory named (argument or ``PYBUILDLESS_BINFMT_DIR``) and with binfmt_misc
    not mounted at the default place (a container), the kernel is probed instead."""
    header = elf_header(platform.architecture)
    if header is None:
        return None
    if directory is None and not os.environ.get(BINFMT_DIR_ENV) and not is_mounted(DEFAULT_BINFMT_DIR):
        return PROBED if kernel_runs(platform.architecture) else None
    for handler in read_handlers(directory):
        if handler.enabled and "F" in handler.flags and handler.matches(header):
            return handler
    return None


# -- asking the kernel (binfmt_misc not mounted here) -------------------------------------------

PROBED = Handler("(found by running a test program: binfmt_misc is not mounted here)", True, "", "F", 0, b"", b"")

# Machine code that calls exit(0), per architecture, with the ELF header fields it needs:
# (load address, e_flags, code). Encodings from each architecture's manual and the Linux
# syscall tables (exit: 60 on amd64, 93 on arm64 and riscv64, 1 on 386, arm, ppc64 and s390x).
_EXIT0 = {
    # xor edi, edi; mov eax, 60; syscall
    "amd64": (0x400000, 0, bytes.fromhex("31ffb83c0000000f05")),
    # xor ebx, ebx; mov eax, 1; int 0x80
    "386": (0x8048000, 0, bytes.fromhex("31dbb801000000cd80")),
    # movz x0, #0; movz x8, #93; svc #0
    "arm64": (0x400000, 0, bytes.fromhex("000080d2a80b80d2010000d4")),
    # mov r0, #0; mov r7, #1; svc #0 (EABI version 5 in e_flags)
    "arm": (0x10000, 0x05000000, bytes.fromhex("0000a0e30170a0e3000000ef")),
    # addi a0, zero, 0; addi a7, zero, 93; ecall
    "riscv64": (0x10000, 0x5, bytes.fromhex("130500009308d00573000000")),
    # li r0, 1; li r3, 0; sc (ELFv2 ABI in e_flags)
    "ppc64le": (0x10000000, 2, bytes.fromhex("010000380000603802000044")),
    # lghi %r2, 0; svc 1
    "s390x": (0x1000000, 0, bytes.fromhex("a72900000a01")),
}


def exit0_program(architecture: str) -> bytes | None:
    """A complete static ELF executable for ``architecture`` that exits with status 0."""
    spec, known = _ELF.get(architecture), _EXIT0.get(architecture)
    if spec is None or known is None:
        return None
    elf_class, data, machine = spec
    vaddr, flags, code = known
    order = "little" if data == 1 else "big"

    def u(n: int, size: int) -> bytes:
        return n.to_bytes(size, order)

    ident = bytes([0x7F, 0x45, 0x4C, 0x46, elf_class, data, 1, 0]) + bytes(8)
    if elf_class == 2:  # ELF64: 64-byte header, one 56-byte program header, then the code
        start = 64 + 56
        header = (ident + u(2, 2) + u(machine, 2) + u(1, 4) + u(vaddr + start, 8) + u(64, 8) + u(0, 8)
                  + u(flags, 4) + u(64, 2) + u(56, 2) + u(1, 2) + u(0, 2) + u(0, 2) + u(0, 2))
        program = (u(1, 4) + u(5, 4) + u(0, 8) + u(vaddr, 8) + u(vaddr, 8) + u(start + len(code), 8)
                   + u(start + len(code), 8) + u(0x1000, 8))
    else:  # ELF32: 52-byte header, one 32-byte program header
        start = 52 + 32
        header = (ident + u(2, 2) + u(machine, 2) + u(1, 4) + u(vaddr + start, 4) + u(52, 4) + u(0, 4)
                  + u(flags, 4) + u(52, 2) + u(32, 2) + u(1, 2) + u(0, 2) + u(0, 2) + u(0, 2))
        program = (u(1, 4) + u(0, 4) + u(vaddr, 4) + u(vaddr, 4) + u(start + len(code), 4)
                   + u(start + len(code), 4) + u(5, 4) + u(0x1000, 4))
    return header + program + code


@functools.lru_cache(maxsize=None)
def kernel_runs(architecture: str) -> bool:
    """Does this kernel run ``architecture``'s programs inside a stage root? The exit(0) program
    is run in a child chrooted into an empty directory (where no emulator path resolves: only an
    F-flag handler works); where chroot is not allowed, it is run in place."""
    from pybuildless.sandbox._linux import failure_in_child

    program = exit0_program(architecture)
    if program is None:
        return False
    top = Path(tempfile.mkdtemp(prefix="pybuildless-binfmt-"))
    try:
        path = top / "probe"
        path.write_bytes(program)
        path.chmod(0o755)

        def run() -> None:
            try:
                os.chroot(top)
                os.chdir("/")
                target = "/probe"
            except OSError:
                target = str(path)
            os.execv(target, [target])

        return failure_in_child(run) is None
    finally:
        shutil.rmtree(top, ignore_errors=True)
