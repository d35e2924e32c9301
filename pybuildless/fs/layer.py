"""Deterministic layer tars from a root directory and a set of changes.

Entries are sorted (parents first, whiteouts before their siblings), PAX,
numeric owners with empty uname/gname, integer mtimes (optionally clamped to
SOURCE_DATE_EPOCH), hardlinks by (dev, inode). The tar is compressed and
hashed while it is written to a temp file in ``out_dir``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import tarfile
import tempfile
from pathlib import Path

from pybuildless.errors import BuildError, UsageError
from pybuildless.fs import owners, secure
from pybuildless.fs.changes import Changes, read_xattrs
from pybuildless.fs.compress import CompressingWriter
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.snapshot import Snapshotter
from pybuildless.fs.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX
from pybuildless.image import mediatypes as mt
from pybuildless.image.model import FileLayer

log = logging.getLogger(__name__)

_EXT = {"gzip": ".tar.gz", "zstd": ".tar.zst", "none": ".tar"}


def _sort_key(rel: str) -> tuple:
    # component-wise: a parent sorts before its children; whiteouts before siblings
    return tuple((0 if c.startswith(WHITEOUT_PREFIX) else 1, c) for c in rel.split("/"))


def layer_entries(changes: Changes) -> list[tuple[str, str]]:
    """(kind, relpath) in archive order; kind is 'path', 'whiteout' or 'opaque'."""
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


class _TarSink:
    """What tarfile writes into: the compressor (tarfile needs write and tell)."""

    def __init__(self, writer: CompressingWriter) -> None:
        self.writer = writer

    def write(self, data) -> int:
        return self.writer.write(data)

    def tell(self) -> int:
        return self.writer.tell()


class _SizedReader:
    """Reads exactly ``size`` bytes of a file, failing clearly if it shrank meanwhile."""

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


class _RootView:
    """Paths to entries of the root that never look through a symlinked parent.

    The parent directory is opened component by component with O_NOFOLLOW;
    the returned ``/proc/self/fd/N/name`` path then names exactly that
    directory's entry, and callers never follow its final component.
    """

    def __init__(self, root: str) -> None:
        self.rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._parent: tuple[str, int | None] | None = None

    def close(self) -> None:
        self._set_parent(None)
        os.close(self.rootfd)

    def _set_parent(self, value) -> None:
        if self._parent is not None and self._parent[1] is not None:
            os.close(self._parent[1])
        self._parent = value

    def locate(self, rel: str) -> str | None:
        parent, _, base = rel.rpartition("/")
        if self._parent is None or self._parent[0] != parent:
            try:
                fd = secure.open_dir_nofollow(self.rootfd, parent)
            except OSError:  # vanished, or now reached through a symlink: not part of this tree
                fd = None
            self._set_parent((parent, fd))
        fd = self._parent[1]
        return None if fd is None else f"/proc/self/fd/{fd}/{base}"


def _entry_info(full: str, rel: str, st: os.stat_result, clamp: int | None, links: dict) -> tarfile.TarInfo | None:
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
        return info  # no xattrs on symlinks
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        log.debug("skipping socket /%s", rel)
        return None
    for name, value in read_xattrs(full):
        if name == owners.OWNER_XATTR:
            # the owner extraction could not apply (single-id user namespace)
            recorded = owners.decode(value)
            if recorded is not None:
                info.uid, info.gid = recorded
            continue
        info.pax_headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return info


def _marker(rel: str) -> tarfile.TarInfo:
    # an empty regular file with mode 0, owner 0:0 and mtime 0, as Kaniko writes whiteouts
    # (kaniko 236ba5690 pkg/util/tar_util.go Whiteout: only Name and Size set)
    info = tarfile.TarInfo(rel)
    info.mode, info.mtime, info.uname, info.gname = 0, 0, "", ""
    return info


def write_layer(
    root: Path | str,
    changes: Changes,
    out_dir: Path | str,
    *,
    compression: str = "gzip",
    level: int | None = None,
    clamp_mtime: int | None = None,
    docker: bool = False,
) -> FileLayer:
    """Write the layer for ``changes`` (read from ``root`` now) into ``out_dir``.

    ``docker=True`` labels the layer with Docker schema 2 media types (for a
    Docker manifest); zstd has none, so that combination is refused.
    """
    if docker and compression == "zstd":
        raise UsageError("--compression=zstd needs an OCI image; the base image uses Docker media types")
    root = os.path.realpath(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".layer-", suffix=".tmp")
    writer: CompressingWriter | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            writer = CompressingWriter(out, compression, level)
            tar = tarfile.TarFile(fileobj=_TarSink(writer), mode="w", format=tarfile.PAX_FORMAT,
                                  encoding="utf-8", errors="surrogateescape")
            links: dict[tuple[int, int], str] = {}
            view = _RootView(root)
            try:
                for kind, rel in layer_entries(changes):
                    if kind != "path":
                        tar.addfile(_marker(rel))
                        continue
                    full = view.locate(rel)
                    try:
                        st = os.lstat(full) if full else None
                    except FileNotFoundError:
                        st = None
                    if st is None:
                        log.debug("/%s vanished before its layer was written", rel)
                        continue
                    info = _entry_info(full, rel, st, clamp_mtime, links)
                    if info is None:
                        continue
                    if info.type == tarfile.REGTYPE:
                        with open(full, "rb", opener=_nofollow_opener) as f:
                            tar.addfile(info, _SizedReader(f, info.size, rel))
                    else:
                        tar.addfile(info)
            finally:
                view.close()
            tar.close()
            blob = writer.close()
        final = out_dir / (blob.digest.hex + _EXT[compression])
        os.replace(tmp, final)
    except BaseException:
        if writer is not None:
            writer.abort()  # no compression thread outlives a failed layer
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    media_type = mt.docker_layer_type(blob.media_type) if docker else blob.media_type
    return FileLayer(final, blob.digest, blob.diff_id, blob.size, media_type)


def _nofollow_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def whole_root_changes(root: Path | str, ignore: IgnoreList | None = None) -> Changes:
    """Every path of ``root`` as added: for --single-snapshot or a layer of a whole tree."""
    return Snapshotter(root, ignore, watch=False).take()


def write_root_layer(root: Path | str, out_dir: Path | str, *, ignore: IgnoreList | None = None,
                     **kwargs) -> FileLayer:
    return write_layer(root, whole_root_changes(root, ignore), out_dir, **kwargs)
