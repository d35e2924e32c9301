"""Running a RUN on an overlay mount over the stage root (see ``pybuildless.fs.overlay``).

``OverlaySupport.probe(parent)`` finds out once whether this process may mount
overlayfs with an upper dir in ``parent`` (next to the stage root, so applying
the upper dir is a rename): real root may; in a user namespace only on kernels
>= 5.11, and then with the ``userxattr`` option (the overlay's own xattrs are
``user.overlay.*`` there). The probe mounts a throwaway overlay in a forked
child's private mount namespace and removes a lower file through it, so
whiteouts are known to work too. When it fails the caller logs why and keeps
the stat-walk snapshots.

``OverlayDirs`` are the fresh upper and work dirs of one step; ``mount_overlay``
runs in the sandbox's monitor, after its mount namespace was made private.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pybuildless.fs import trash
from pybuildless.sandbox import _linux

# Copy-up must copy data (no metacopy) and never record redirects: the upper dir
# has to be self-contained, since it is applied onto the root without the overlay.
_COMMON_OPTIONS = ("index=off", "metacopy=off", "redirect_dir=nofollow")
_UNSAFE_IN_OPTIONS = (",", ":", "\\", "\n")


def in_user_namespace() -> bool:
    """True when this process's uid map is not the initial namespace's identity map."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            lines = f.read().split("\n")
    except OSError:
        return False
    return [line.split() for line in lines if line.strip()] != [["0", "0", "4294967295"]]


def mount_options(lower: str, upper: str, work: str, *, userxattr: bool) -> str:
    opts = [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}", *_COMMON_OPTIONS]
    if userxattr:
        opts.append("userxattr")
    return ",".join(opts)


def mount_overlay(target: str, upper: str, work: str, *, userxattr: bool) -> None:
    """Mount an overlay over ``target`` with ``target`` itself as the lower dir."""
    mount_volatile(target, mount_options(target, upper, work, userxattr=userxattr))


def mount_volatile(target: str, options: str) -> None:
    """Mount an overlay with ``volatile`` (Linux 5.10+), else without.

    Without it, the overlay syncs its upper dir's whole filesystem when it is unmounted, which for
    these mounts happens as their mount namespace goes: a probe or RUN child that exits right after
    the build laid a base layer in the store waited ~110 ms per 50 MB of dirty page cache before
    it could be reaped (300 ms to 1 s seen in cold builds). Nothing here outlives the build, so a
    crash may lose the upper dir: volatile's only risk. The work dir keeps a marker
    (``work/incompat/volatile``) that stops a second mount; every mount here has a fresh one."""
    try:
        _linux.mount("overlay", target, "overlay", 0, options + ",volatile")
    except OSError as e:
        if e.errno != errno.EINVAL:  # a kernel before 5.10 does not know the option
            raise
        _linux.mount("overlay", target, "overlay", 0, options)


@dataclass(frozen=True)
class OverlayDirs:
    """The upper and work dirs of one step, in a private directory next to the root."""

    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @classmethod
    def create(cls, parent: Path) -> "OverlayDirs":
        base = Path(tempfile.mkdtemp(prefix=".pybuildless-overlay-", dir=parent))
        (base / "upper").mkdir(mode=0o755)
        (base / "work").mkdir(mode=0o700)
        return cls(base)

    def remove(self) -> None:
        """Give the dirs up once the overlay is unmounted (its namespace is gone): moved to the
        build's trash (a rename, removed after the build), or removed now outside a build's work dir."""
        trash.discard(self.base)


@dataclass(frozen=True)
class OverlaySupport:
    """Whether overlay mounts work here, with which xattr namespace, and why not."""

    usable: bool
    userxattr: bool = False
    reason: str = ""

    @classmethod
    def probe(cls, parent: Path, lower: Path | None = None) -> "OverlaySupport":
        """Can an overlay with its upper dir in ``parent`` be mounted (over ``lower``, whose
        path must be writable in the mount options too)?"""
        parent_s = os.fspath(parent)
        for path in (parent_s, os.fspath(lower) if lower is not None else ""):
            if any(c in path for c in _UNSAFE_IN_OPTIONS):
                return cls(False, reason=f"the path {path!r} cannot be written in overlay mount options")
        userxattr = in_user_namespace()
        try:
            base = Path(tempfile.mkdtemp(prefix=".pybuildless-overlay-probe-", dir=parent))
        except OSError as exc:
            return cls(False, reason=f"cannot create a directory in {parent_s}: {exc.strerror}")
        try:
            for name in ("lower", "upper", "work"):
                (base / name).mkdir()
            (base / "lower" / "gone").write_bytes(b"")
            error = _probe_in_child(base, userxattr)
            upper_has_whiteout = error is None and os.path.lexists(base / "upper" / "gone")
        finally:
            shutil.rmtree(base, ignore_errors=True)
        if error is not None:
            return cls(False, userxattr, error)
        if not upper_has_whiteout:
            return cls(False, userxattr, "a deletion left no whiteout in the upper dir")
        return cls(True, userxattr)


def _probe_in_child(base: Path, userxattr: bool) -> str | None:
    """Mount and use an overlay in a forked child's own mount namespace; None when it worked."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: syscalls only, then _exit
        os.close(r)
        status = 1
        try:
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
            lower = os.fspath(base / "lower")
            mount_volatile(lower, mount_options(lower, os.fspath(base / "upper"), os.fspath(base / "work"),
                                                userxattr=userxattr))
            os.unlink(os.path.join(lower, "gone"))
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            os.write(w, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4000])
        finally:
            os._exit(status)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return b"".join(chunks).decode(errors="replace") or f"probe exited with status {status}"
