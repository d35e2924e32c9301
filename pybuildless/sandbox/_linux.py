"""Thin ctypes wrappers for the Linux calls Python 3.11's ``os`` lacks.

``unshare``, ``mount``, ``umount2``, ``prctl`` and ``sethostname``; all raise
``OSError`` with the real errno. The libc handle and function pointers are
resolved at import time so that a freshly forked child only makes calls and
never has to take the import lock.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

MNT_DETACH = 0x2

# mount_setattr(2) (Linux 5.12): one call changes the attributes of a whole mount tree.
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (unified syscall table)
_MOUNT_ATTR_RDONLY = 0x1
_AT_RECURSIVE = 0x8000
_AT_FDCWD = -100

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# The RUN capability set lives in capabilities; the names stay importable from here.
from pybuildless.sandbox.capabilities import (  # noqa: E402,F401
    CAP_AUDIT_WRITE, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_MKNOD, CAP_NET_BIND_SERVICE,
    CAP_NET_RAW, CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, CAP_SETUID, CAP_SYS_ADMIN, CAP_SYS_CHROOT, RUN_CAPABILITIES,
    bounding_drops, capset_words)

# pivot_root has no glibc wrapper.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}.get(
    os.uname().machine)

# The interpreter's own libc, already loaded: dlopen(NULL) resolves its symbols. (find_library("c")
# ran `ldconfig -p` in a child process at every start, ~3 ms, and finds nothing in the FROM-scratch
# executor image, which has no ldconfig.)
_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
# A second prototype taking a string: passing bytes straight through costs a forked child no
# ctypes buffer (its first allocation after fork is ~0.15 ms of copy-on-write faults).
_prctl_str = _libc["prctl"]
_prctl_str.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_capget = _libc.capget
_capset = _libc.capset
_sethostname = _libc.sethostname
_sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_umount2(_b(target), flags), f"umount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_prctl(option, arg, 0, 0, 0), "prctl")


def set_process_name(name: bytes) -> None:
    """This thread's comm (/proc/PID/comm and the Name: line of status), at most 15 bytes."""
    _check(_prctl_str(PR_SET_NAME, name[:15], 0, 0, 0), "prctl PR_SET_NAME")


def make_tree_readonly(target: str | os.PathLike[str]) -> bool:
    """Make the mount at ``target`` and every mount below it read-only; False if the kernel
    lacks mount_setattr (before 5.12), so the caller can fall back to remounting one by one."""
    attr = struct.pack("QQQQ", _MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clr, propagation, userns_fd
    buf = ctypes.create_string_buffer(attr, len(attr))
    result = int(_syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, _b(target), _AT_RECURSIVE, buf, len(attr)))
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err == 38:  # ENOSYS
        return False
    raise OSError(err, f"mount_setattr {target}: {os.strerror(err)}")


def pivot_available() -> bool:
    return _SYS_PIVOT_ROOT is not None


def pivot_into(new_root: str) -> None:
    """Make ``new_root`` (a mount point) this mount namespace's root and detach the old one.

    pivot_root(".", ".") stacks the old root on top of the new one; unmounting
    "." then removes it, so no directory for it is needed inside the image.
    """
    if _SYS_PIVOT_ROOT is None:
        raise OSError(38, "pivot_root: unknown syscall number on this architecture")
    os.chdir(new_root)
    _check(int(_syscall(_SYS_PIVOT_ROOT, b".", b".")), "pivot_root")
    umount(".", MNT_DETACH)
    os.chdir("/")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522


def limit_capabilities(keep: frozenset[int], last_cap: int) -> None:
    """Drop every capability not in ``keep`` from the bounding, inheritable and ambient sets.

    Root keeps only ``keep`` across exec (its permitted set after exec is
    bounded); a non-root user loses them all at setuid anyway.
    """
    for cap in bounding_drops(keep, last_cap):
        prctl(PR_CAPBSET_DROP, cap)
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    _check(_capget(ctypes.byref(header), data), "capget")
    mask = capset_words(keep)
    for i in range(2):
        data[i].inheritable &= mask[i]
    _check(_capset(ctypes.byref(header), data), "capset")
    _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl ambient")


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def sethostname(name: str) -> None:
    data = name.encode()
    _check(_sethostname(data, len(data)), "sethostname")


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def bring_up_loopback() -> None:
    """Set ``lo`` up in a fresh network namespace (``--network=none`` keeps loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def can_unshare(flags: int) -> bool:
    """Whether this process may create these namespaces (tried in a throwaway child)."""
    pid = os.fork()
    if pid == 0:
        try:
            unshare(flags)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def failure_in_child(action, describe=lambda exc: f"{type(exc).__name__}: {exc}", limit: int = 1000,
                     silent: str = "failed") -> str | None:
    """Run ``action`` in a throwaway forked child: None if it succeeded, else ``describe(exc)``
    (or ``silent`` when the child died without a word). Namespace and mount probes go through
    this, so nothing they change reaches the calling process."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - forked child
        os.close(r)
        try:
            action()
            os._exit(0)
        except BaseException as exc:
            try:
                os.write(w, describe(exc).encode("utf-8", "replace")[:limit])
            except OSError:
                pass
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or silent
