"""Path resolution that never leaves a root directory.

Every write of the extractor goes through a directory fd obtained here. The
preferred way is ``openat2(2)`` with ``RESOLVE_IN_ROOT`` (Linux >= 5.6): the
kernel resolves symlinks and ``..`` as if the root were ``/``. Where that is
unavailable (old kernel, seccomp) a userspace walk does the same, one component
at a time with ``O_NOFOLLOW``, re-reading symlinks and restarting absolute ones
at the root fd.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Callable

from pybuildless.errors import LayerSecurityError

log = logging.getLogger(__name__)

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "armv7l": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_MAX_LINKS = 40  # MAXSYMLINKS: what the kernel (openat2 included) follows in one lookup

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_libc = None
_openat2_ok: bool | None = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def openat2_in_root(rootfd: int, path: str, flags: int = _DIR_FLAGS) -> int | None:
    """``openat2(rootfd, path, flags, RESOLVE_IN_ROOT)``; None when the syscall is unusable.

    Raises OSError for real failures (ENOENT, ENOTDIR, ELOOP...).
    """
    global _openat2_ok
    if _openat2_ok is False:
        return None
    nr = _SYS_OPENAT2.get(os.uname().machine)
    if nr is None:
        _openat2_ok = False
        return None
    how = struct.pack("QQQ", flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    buf = ctypes.create_string_buffer(how, len(how))
    encoded = os.fsencode(path or ".")
    fd = _syscall()(ctypes.c_long(nr), ctypes.c_int(rootfd), ctypes.c_char_p(encoded), buf, ctypes.c_size_t(len(how)))
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG) and _openat2_ok is None:
            log.debug("openat2 unavailable (errno %d), using the userspace walk", err)
            _openat2_ok = False
            return None
        raise OSError(err, os.strerror(err), path)
    _openat2_ok = True
    return int(fd)


def disable_openat2() -> None:
    """Force the userspace walk (tests exercise both implementations)."""
    global _openat2_ok
    _openat2_ok = False


def enable_openat2() -> None:
    global _openat2_ok
    _openat2_ok = None


def split_components(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


@dataclass
class Walked:
    """Where a path inside a root leads: the deepest directory reached, and what lies below it.

    ``fd`` is an ``O_PATH`` fd of that directory (the caller closes it) and ``names`` its
    components below the root. ``tail`` is empty when the path is that directory; otherwise it
    holds the missing components, or first an existing entry that is not a directory (a file,
    a device, a final symlink not followed), whose lstat is ``tail_st``.
    """

    fd: int
    names: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    tail_st: os.stat_result | None = None


def walk(rootfd: int, path: str, *, follow_final: bool = True, missing: str = "tail",
         mode: int = 0o755, on_create: Callable[[int, str], None] | None = None) -> Walked:
    """Resolve ``path`` inside the root one component at a time, as if chrooted.

    Each directory is opened with ``O_NOFOLLOW`` relative to the previous one; a symlink is
    read and its target resolved in turn (an absolute one from the root fd), ``..`` never
    climbs above the root. ``missing`` says what a missing component does: ``"raise"``
    (FileNotFoundError), ``"create"`` (``mkdir`` with ``mode``, then ``on_create(fd, name)``
    with an ``O_PATH`` fd of the new directory) or ``"tail"`` (it and everything after it are
    kept in ``tail``, where a later ``..`` takes it back, as a lexical path would). Except in
    ``"tail"`` mode an entry that is not a directory raises NotADirectoryError.
    """
    stack = [(os.dup(rootfd), "")]  # (fd, name) of the directories walked so far; stack[0] is the root
    result = Walked(fd=-1)
    pending = split_components(path)
    pending.reverse()
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name == "..":
                if result.tail:
                    result.tail.pop()
                    result.tail_st = result.tail_st if result.tail else None
                elif len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            if result.tail:
                result.tail.append(name)  # below something missing or not a directory
                continue
            cur = stack[-1][0]
            try:
                st = os.lstat(name, dir_fd=cur)
            except FileNotFoundError:
                if missing == "tail":
                    result.tail.append(name)
                    continue
                if missing != "create":
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=cur)
                    created = True
                except FileExistsError:
                    created = False  # raced with ourselves: re-examine below
                st = os.lstat(name, dir_fd=cur)
                if created and on_create is not None and stat.S_ISDIR(st.st_mode):
                    fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=cur)
                    stack.append((fd, name))
                    on_create(fd, "/" + "/".join(n for _, n in stack[1:]))
                    continue
            if stat.S_ISLNK(st.st_mode) and (follow_final or pending):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                parts = split_components(target)
                parts.reverse()
                pending.extend(parts)
                continue
            if not stat.S_ISDIR(st.st_mode):
                if missing != "tail":
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
                result.tail, result.tail_st = [name], st
                continue
            stack.append((os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=cur), name))
        result.names = [n for _, n in stack[1:]]
        result.fd = stack.pop()[0]
        return result
    finally:
        for fd, _ in stack:
            os.close(fd)


def walk_in_root(rootfd: int, path: str, *, create: bool = False, mode: int = 0o755) -> int:
    """Open directory ``path`` inside the root, following symlinks as if chrooted.

    ``create`` makes missing directories (mode ``mode``, owned by the caller),
    the way ``mkdir -p`` would inside a chroot. Returns an ``O_PATH`` fd the
    caller closes. Raises NotADirectoryError / FileNotFoundError.
    """
    if not create:
        fd = openat2_in_root(rootfd, path)
        if fd is not None:
            return fd
    return walk(rootfd, path, missing="create" if create else "raise", mode=mode).fd


def open_dir_nofollow(rootfd: int, path: str) -> int:
    """O_PATH fd of directory ``path`` below the root, refusing any symlink on the way.

    For reading a tree as it is (layer writing), where a symlinked parent means
    the path is not part of the tree. Raises OSError (ENOTDIR, ELOOP, ENOENT).
    """
    cur = os.dup(rootfd)
    try:
        for name in split_components(path):
            if name == "..":
                raise OSError(errno.EINVAL, "'..' in a snapshot path", path)
            nxt = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=cur)
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def fd_path(fd: int) -> str:
    """The kernel's idea of where an fd points (for ignore-list checks on resolved paths)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def remove_in_dir(dirfd: int, name: str, *, keep=None, prefix: str = "") -> bool:
    """Remove ``name`` under ``dirfd`` recursively, never following symlinks.

    ``keep(path)`` (path = ``prefix/name``) may return "keep" (leave it and all
    below), "descend" (keep it but clean its children) or None (remove). Returns
    True when ``name`` itself was removed.
    """
    path = f"{prefix}/{name}" if prefix else name
    decision = keep(path) if keep is not None else None
    if decision == "keep":
        return False
    try:
        st = os.lstat(name, dir_fd=dirfd)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        if decision == "descend":
            return False
        os.unlink(name, dir_fd=dirfd)
        return True
    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    all_removed = True
    try:
        for child in os.listdir(sub):
            if not remove_in_dir(sub, child, keep=keep, prefix=path):
                all_removed = False
    finally:
        os.close(sub)
    if decision == "descend" or not all_removed:
        return False
    os.rmdir(name, dir_fd=dirfd)
    return True


def check_name(name: str) -> str:
    """Normalise a tar member name to a relative path; '' is the root itself.

    Rejects NUL and any ``..`` that would climb above the root: such a name has
    no legitimate meaning in a layer.
    """
    if "\x00" in name:
        raise LayerSecurityError(f"layer entry name contains NUL: {name!r}")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise LayerSecurityError(f"layer entry escapes the root: {name!r}")
        parts.append(comp)
    return "/".join(parts)
