"""Helpers for the filesystem tests: tar building, tree fingerprints, the hostile-layer corpus."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar of the given headers (and contents for regular files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            if isinstance(e, tuple):
                info, data = e
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(e)
    return buf.getvalue()


def entry(name: str, kind: str = "file", data: bytes = b"", *, link: str = "", mode: int | None = None,
          uid: int = 0, gid: int = 0, mtime: int = 1_600_000_000, dev: tuple[int, int] = (0, 0),
          pax: dict[str, str] | None = None):
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid = mtime, uid, gid
    info.type = {
        "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE,
    }[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.linkname = link
    info.devmajor, info.devminor = dev
    if pax:
        info.pax_headers = dict(pax)
    return (info, data) if kind == "file" else info


def fingerprint(root: Path | str, *, dir_mtimes: bool = True, owners: bool = True) -> dict[str, tuple]:
    """Everything observable about a tree (excluding the root directory itself)."""
    root = str(root)
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                body = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                body = None
            try:
                xattrs = tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False))
                                      for n in os.listxattr(full, follow_symlinks=False)
                                      if n.startswith(("user.", "security.capability"))))
            except OSError:
                xattrs = ()
            mtime = int(st.st_mtime) if dir_mtimes or not stat.S_ISDIR(st.st_mode) else None
            perms = stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None
            own = (st.st_uid, st.st_gid) if owners else None
            out[rel] = (kind, perms, own, body, mtime, xattrs)
    for group in inodes.values():
        for rel in group:
            out[rel] = out[rel] + (tuple(sorted(group)),)
    return out


@dataclass(frozen=True)
class HostileCase:
    name: str
    layers: list[bytes]
    # None: must apply (contained); otherwise the error class name expected
    error: str | None
    # extra check on the root after applying (may be None)
    check: Callable[[Path], None] | None = field(default=None, compare=False)


def _exists(rel: str, kind: str = "file") -> Callable[[Path], None]:
    def check(root: Path) -> None:
        p = root / rel
        assert p.is_symlink() or p.exists(), f"{rel} should exist inside the root"
        if kind == "file":
            assert not p.is_symlink() and p.is_file()
        if kind == "dir":
            assert not p.is_symlink() and p.is_dir()
    return check


def hostile_corpus(canary: Path) -> list[HostileCase]:
    """Layers that try to write, link, chmod or delete outside the root at ``canary``.

    ``canary`` is an absolute directory next to the root holding ``passwd`` and
    ``sub/file``.
    """
    c = str(canary)
    rel_up = "../" * 12 + c.lstrip("/")
    F = lambda name, data=b"pwned", **kw: entry(name, "file", data, **kw)  # noqa: E731
    S = lambda name, target: entry(name, "symlink", link=target)  # noqa: E731
    H = lambda name, target: entry(name, "hardlink", link=target)  # noqa: E731
    D = lambda name, **kw: entry(name, "dir", **kw)  # noqa: E731
    cases = [
        HostileCase("dotdot", [tar_bytes([F("../escape")])], "LayerSecurityError"),
        HostileCase("dotdot_deep", [tar_bytes([F("a/b/../../../escape")])], "LayerSecurityError"),
        HostileCase("dotdot_canary", [tar_bytes([F(rel_up + "/passwd")])], "LayerSecurityError"),
        HostileCase("absolute_name", [tar_bytes([F(c + "/passwd")])], None, _exists(c.lstrip("/") + "/passwd")),
        HostileCase("symlink_then_write", [tar_bytes([S("lnk", c), F("lnk/passwd")])], None,
                    _exists(c.lstrip("/") + "/passwd")),
        HostileCase("relative_symlink_then_write", [tar_bytes([S("lnk", rel_up), F("lnk/passwd")])], None,
                    _exists(c.lstrip("/") + "/passwd")),
        HostileCase("symlink_across_layers", [tar_bytes([S("lnk", c)]), tar_bytes([F("lnk/passwd")])], None,
                    _exists(c.lstrip("/") + "/passwd")),
        HostileCase("symlink_dir_then_mkdir", [tar_bytes([S("lnk", c), D("lnk/sub", mode=0o777)])], None,
                    _exists(c.lstrip("/") + "/sub", "dir")),
        HostileCase("hardlink_absolute_outside", [tar_bytes([H("h", c + "/passwd")])], "LayerFormatError"),
        HostileCase("hardlink_dotdot", [tar_bytes([H("h", rel_up + "/passwd")])], "LayerSecurityError"),
        HostileCase("hardlink_through_symlink", [tar_bytes([S("lnk", c), H("h", "lnk/passwd")])],
                    "LayerFormatError"),
        HostileCase("hardlink_to_symlink_then_write",
                    [tar_bytes([S("s", c + "/passwd"), H("h", "s")]), tar_bytes([F("h", b"overwritten")])], None,
                    _exists("h")),
        HostileCase("whiteout_dotdot", [tar_bytes([F("a/.wh..", b"")])], "LayerSecurityError"),
        HostileCase("whiteout_parent_escape", [tar_bytes([F("../.wh.passwd", b"")])], "LayerSecurityError"),
        HostileCase("whiteout_through_symlink", [tar_bytes([S("lnk", c)]), tar_bytes([F("lnk/.wh.passwd", b"")])],
                    None),
        HostileCase("whiteout_of_symlinked_dir_child", [tar_bytes([S("lnk", rel_up)]),
                                                        tar_bytes([F("lnk/.wh.sub", b"")])], None),
        HostileCase("opaque_on_symlinked_dir", [tar_bytes([S("lnk", c)]), tar_bytes([F("lnk/.wh..wh..opq", b"")])],
                    None),
        HostileCase("device_over_root", [tar_bytes([entry(".", "chr", dev=(1, 3))])], "LayerSecurityError"),
        HostileCase("root_replaced_by_symlink", [tar_bytes([S("./", c), F("passwd")])], "LayerSecurityError"),
        HostileCase("root_replaced_by_file", [tar_bytes([F(".", b"x")])], "LayerSecurityError"),
        HostileCase("pax_long_name_traversal", [tar_bytes([F("../" * 40 + "x" * 200)])], "LayerSecurityError"),
        HostileCase("gnu_long_name_traversal", [tar_bytes([F("../" * 40 + "y" * 200)], tarfile.GNU_FORMAT)],
                    "LayerSecurityError"),
        HostileCase("symlink_loop", [tar_bytes([S("a", "b"), S("b", "a"), F("a/x")])], "LayerFormatError"),
        HostileCase("file_replacing_symlink_out", [tar_bytes([S("f", c + "/passwd")]),
                                                   tar_bytes([F("f", b"mine", mode=0o4777)])], None, _exists("f")),
        HostileCase("dir_replacing_symlink_out", [tar_bytes([S("d", c)]), tar_bytes([D("d", mode=0o777)])], None,
                    _exists("d", "dir")),
        HostileCase("symlink_chain_out", [tar_bytes([S("a", "b/sub"), S("b", rel_up), F("a/file")])], None,
                    _exists(c.lstrip("/") + "/sub/file")),
        HostileCase("empty_whiteout_name", [tar_bytes([F(".wh.", b"")])], "LayerSecurityError"),
    ]
    return cases
