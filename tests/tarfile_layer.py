"""The layer tar as Python's tarfile writes it: the oracle for fs/tarwriter.py.

This is how fs/layer.py built its entries before it wrote headers itself
(TarInfo per entry, PAX_FORMAT, utf-8 with surrogateescape, empty
uname/gname, the file read through a size-checking reader), kept here so
tests/test_fs_tarwriter.py and benchmarks/layer_write.py can compare the new
bytes with tarfile's for the same tree.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile

from pybuildless.errors import BuildError
from pybuildless.fs import owners
from pybuildless.fs.changes import Changes, read_xattrs
from pybuildless.fs.compress import BlobInfo, CompressingWriter
from pybuildless.fs.layer import _RootView
from pybuildless.fs.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX


def _sort_key(rel: str) -> tuple:
    return tuple((0 if c.startswith(WHITEOUT_PREFIX) else 1, c) for c in rel.split("/"))


def layer_entries_before(changes: Changes) -> list[tuple[str, str]]:
    """layer_entries as it was: (kind, relpath) in archive order, sorted by tuples of components."""
    items: dict[str, str] = {}
    for rel in changes.paths:
        items[rel] = "path"
        parent = posixpath.dirname(rel)
        while parent and parent not in items:
            items[parent] = "path"
            parent = posixpath.dirname(parent)
    for rel in changes.opaque:
        items[rel] = "path"
        items[f"{rel}/{OPAQUE_MARKER}"] = "opaque"
    for rel in changes.deleted:
        parent, base = posixpath.split(rel)
        wh = posixpath.join(parent, WHITEOUT_PREFIX + base)
        items[wh] = "whiteout"
        while parent and parent not in items:
            items[parent] = "path"
            parent = posixpath.dirname(parent)
    return sorted(((kind, rel) for rel, kind in items.items()), key=lambda kr: _sort_key(kr[1]))


class _Sink:
    def __init__(self, writer: CompressingWriter) -> None:
        self.writer = writer

    def write(self, data) -> int:
        return self.writer.write(data)

    def tell(self) -> int:
        return self.writer.tell()


class _SizedReader:
    def __init__(self, f, size: int, rel: str) -> None:
        self.f, self.left, self.rel = f, size, rel

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        if not data:
            raise BuildError(f"/{self.rel} changed size while its layer was being written")
        self.left -= len(data)
        return data


def tarinfo(name: str, *, typeflag: bytes = tarfile.REGTYPE, mode: int = 0, uid: int = 0, gid: int = 0,
            size: int = 0, mtime: int = 0, linkname: str = "", devmajor: int = 0, devminor: int = 0,
            xattrs=()) -> tarfile.TarInfo:
    """A TarInfo set up field by field, as the layer writer did."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = typeflag, mode, uid, gid
    info.size, info.mtime, info.linkname = size, mtime, linkname
    info.uname = info.gname = ""
    info.devmajor, info.devminor = devmajor, devminor
    for key, value in xattrs:
        info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    return info


def new_tarfile(fileobj) -> tarfile.TarFile:
    return tarfile.TarFile(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT,
                           encoding="utf-8", errors="surrogateescape")


def _entry_info(full: str, rel: str, st: os.stat_result, clamp: int | None, links: dict):
    mode = st.st_mode
    info = tarfile.TarInfo(rel + "/" if stat.S_ISDIR(mode) else rel)
    info.mode = stat.S_IMODE(mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    mtime = int(st.st_mtime)
    info.mtime = min(mtime, clamp) if clamp is not None else mtime
    if stat.S_ISREG(mode):
        ident = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and ident in links:
            info.type = tarfile.LNKTYPE
            info.linkname = links[ident]
            return info
        if st.st_nlink > 1:
            links[ident] = rel
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        return info
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None
    for name, value in read_xattrs(full):
        if name == owners.OWNER_XATTR:
            recorded = owners.decode(value)
            if recorded is not None:
                info.uid, info.gid = recorded
            continue
        info.pax_headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return info


def write_with_tarfile(root: str, changes: Changes, out, *, compression: str = "none", level: int | None = None,
                       clamp_mtime: int | None = None) -> BlobInfo:
    """The layer of ``changes`` written by tarfile into ``out``; its BlobInfo (digest, diff_id)."""
    writer = CompressingWriter(out, compression, level)
    tar = new_tarfile(_Sink(writer))
    links: dict = {}
    view = _RootView(os.path.realpath(root))
    try:
        for kind, rel in layer_entries_before(changes):
            if kind != "path":
                tar.addfile(tarinfo(rel))
                continue
            where = view.locate(rel)
            full = f"/proc/self/fd/{where[0]}/{where[1]}" if where else None
            try:
                st = os.lstat(full) if full else None
            except FileNotFoundError:
                st = None
            if st is None:
                continue
            info = _entry_info(full, rel, st, clamp_mtime, links)
            if info is None:
                continue
            if info.type == tarfile.REGTYPE:
                opener = lambda path, flags: os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)  # noqa: E731
                with open(full, "rb", opener=opener) as f:
                    tar.addfile(info, _SizedReader(f, info.size, rel))
            else:
                tar.addfile(info)
    finally:
        view.close()
    tar.close()
    return writer.close()
