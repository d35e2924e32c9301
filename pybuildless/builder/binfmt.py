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
"""

from __future__ import annotations

import os
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


def emulator_for(platform: Platform, directory: Path | None = None) -> Handler | None:
    """The enabled handler with the F flag that runs ``platform``'s executables, if any."""
    header = elf_header(platform.architecture)
    if header is None:
        return None
    for handler in read_handlers(directory):
        if handler.enabled and "F" in handler.flags and handler.matches(header):
            return handler
    return None
