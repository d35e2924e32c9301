"""What a build step changed (``Changes``) and the per-path stat keys snapshots compare."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

# xattrs recorded and written into layers (never trusted.*, never host SELinux labels)
XATTR_PREFIXES = ("security.capability", "user.")

# indices of the stat key fields: (st_mode, uid, gid, size, mtime_ns, ctime_ns, ino, dev, nlink, rdev)
MODE, UID, GID, SIZE, MTIME, CTIME, INO, DEV, NLINK, RDEV = range(10)


def stat_key(st: os.stat_result) -> tuple:
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            st.st_ino, st.st_dev, st.st_nlink, st.st_rdev)


def read_xattrs(path: str | int) -> tuple[tuple[str, bytes], ...]:
    """The image-relevant xattrs of ``path`` (not followed when a link), or of an open file's fd, sorted."""
    follow = isinstance(path, int)  # an fd names the file itself; a path's link is never followed
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError:
        return ()
    out = []
    for name in names:
        if name.startswith(XATTR_PREFIXES):
            try:
                out.append((name, os.getxattr(path, name, follow_symlinks=follow)))
            except OSError:
                pass
    return tuple(sorted(out))


def ancestors(rel: str):
    """'a/b/c' -> 'a/b', 'a'."""
    while "/" in rel:
        rel = rel.rpartition("/")[0]
        yield rel


def hash_file(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


@dataclass(frozen=True)
class Changes:
    """Paths (relative, no leading slash) a layer must carry."""

    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()  # topmost vanished paths that exist below: whiteouts
    opaque: tuple[str, ...] = ()  # directories recreated in this step: opaque markers

    @property
    def empty(self) -> bool:
        return not (self.added or self.modified or self.deleted or self.opaque)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.added) | set(self.modified)))
