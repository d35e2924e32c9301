"""A layer entry's metadata (owner, xattrs, mode, times) put on what extraction created.

Extraction (``fs.extract``) creates each entry with a private mode; this module then
gives it what the tar header says. The order matters: the owner first, because
``chown`` clears setuid/setgid, then the mode, then the times (any change moves them).
Only image xattrs are applied (``user.*``, ``security.*``, ``system.posix_acl_*``),
never ``trusted.*`` and never the builder's own owner record (``owners.OWNER_XATTR``),
which a layer from a registry must not be able to forge.
"""

from __future__ import annotations

import errno
import logging
import os
import tarfile

from pybuildless.fs import owners

log = logging.getLogger(__name__)

XATTR_ALLOWED = ("user.", "security.", "system.posix_acl_")
_PAX_XATTR = "SCHILY.xattr."


def entry_xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """The xattrs of ``member`` (PAX ``SCHILY.xattr.NAME`` records) that may be applied."""
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith(_PAX_XATTR):
            name = key[len(_PAX_XATTR):]
            if name == owners.OWNER_XATTR:
                log.debug("dropping %s on %s: only the builder itself records it", name, member.name)
            elif name.startswith(XATTR_ALLOWED):
                out.append((name, value.encode("utf-8", "surrogateescape")))
            else:
                log.debug("dropping xattr %s on %s", name, member.name)
    return out


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in nanoseconds (PAX mtimes carry fractions of a second)."""
    raw = member.pax_headers.get("mtime")
    if raw is not None:
        from decimal import Decimal  # loaded for entries with a PAX mtime only

        try:
            # from the decimal text: tarfile's float has no room for the nanoseconds of today's times
            return int(Decimal(raw).scaleb(9))
        except (ArithmeticError, ValueError):  # garbage, inf, nan
            pass  # tarfile has already read it as best it could
    return int(round(member.mtime * 1_000_000_000))


def set_xattrs(fd: int, member: tarfile.TarInfo) -> None:
    """Apply the entry's xattrs to ``fd``; one the filesystem refuses is skipped."""
    for name, value in entry_xattrs(member):
        try:
            os.setxattr(fd, name, value)
        except OSError as e:
            log.debug("cannot set xattr %s on %s: %s", name, member.name, e)


def apply_to_file(fd: int, member: tarfile.TarInfo, *, same_owner: bool, fresh: bool = False) -> None:
    """Owner, xattrs, mode and times of a regular file open for writing as ``fd``.
    ``fresh``: extraction has just created it, so it has no owner record to remove."""
    if same_owner:
        if fresh:
            _fchown_new(fd, member.uid, member.gid)
        else:
            owners.fchown_or_record(fd, member.uid, member.gid)
    set_xattrs(fd, member)
    os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid/setgid
    os.utime(fd, ns=(mtime_ns(member),) * 2)


def _fchown_new(fd: int, uid: int, gid: int) -> None:
    """``owners.fchown_or_record`` for a file just created: no stale record to remove."""
    try:
        os.fchown(fd, uid, gid)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.setxattr(fd, owners.OWNER_XATTR, owners.encode(uid, gid))


def apply_to_dir(fd: int, member: tarfile.TarInfo, *, same_owner: bool, privileged: bool,
                 fresh: bool = False) -> int | None:
    """Owner, xattrs and mode of the directory open as ``fd`` (its times are set at the end of the
    layer, after its children). Returns the mode to put back at the end of the layer when the
    directory was kept writable meanwhile, else None. ``fresh``: extraction has just made it."""
    if same_owner:
        if fresh:
            _fchown_new(fd, member.uid, member.gid)
        else:
            owners.fchown_or_record(fd, member.uid, member.gid)
    set_xattrs(fd, member)
    mode = member.mode & 0o7777
    deferred = None
    if not privileged and mode & 0o700 != 0o700:
        # without CAP_DAC_OVERRIDE we could not create the children of a
        # read-only directory: keep it writable until the end of the layer
        deferred = mode
        mode |= 0o700
    os.fchmod(fd, mode)
    return deferred


def apply_to_root(fd: int, member: tarfile.TarInfo, *, same_owner: bool) -> None:
    """Owner and mode of the root directory (the ``./`` entry) open as ``fd``."""
    if same_owner:
        owners.fchown_or_record(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)


def apply_to_symlink(pfd: int, base: str, member: tarfile.TarInfo, *, same_owner: bool) -> None:
    """Owner and times of the symlink ``base`` in directory ``pfd`` (never following it)."""
    if same_owner:
        owners.lchown_or_skip(base, member.uid, member.gid, dir_fd=pfd)
    os.utime(base, ns=(mtime_ns(member),) * 2, dir_fd=pfd, follow_symlinks=False)


def apply_to_special(pfd: int, base: str, member: tarfile.TarInfo, *, same_owner: bool) -> None:
    """Owner, mode and times of the device or fifo ``base`` extraction just created in ``pfd``."""
    if same_owner:
        owners.lchown_or_skip(base, member.uid, member.gid, dir_fd=pfd)
    os.chmod(base, member.mode & 0o7777, dir_fd=pfd)  # just created by us: not a symlink
    os.utime(base, ns=(mtime_ns(member),) * 2, dir_fd=pfd, follow_symlinks=False)
