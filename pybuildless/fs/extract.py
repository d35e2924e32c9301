"""Apply one layer tar onto a root directory, safely.

Every write happens relative to a directory fd resolved inside the root
(``secure.walk_in_root``), the final component is never followed, and an
existing non-directory is unlinked before anything is created in its place.
tarfile only parses headers here; it never writes. Owner, xattrs, mode and
times of each entry are applied by ``fs.entrymeta``.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pybuildless.errors import DigestMismatchError, ImageFormatError, LayerSecurityError, PybuildlessError
from pybuildless.fs import entrymeta, owners, secure
from pybuildless.fs.compress import HashingReader, open_decompressed, zstd_error
from pybuildless.fs.extractdirs import Directories, split
from pybuildless.fs.extractpool import JobFailed, ReadAhead, member_data, new_file, new_symlink
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.tarread import FastTarInfo, TarStream
from pybuildless.fs.whiteouts import WHITEOUT_PREFIX, apply_whiteout
from pybuildless.image.descriptor import Digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_FD_CACHE_LIMIT = 256
_READ_AHEAD = 8  # pieces of _CHUNK bytes decompressed and hashed ahead of the parsing
_POOL_FILE_MAX = 4 << 20  # bigger files are streamed by the extractor's thread


class LayerFormatError(ImageFormatError):
    """A layer tar that cannot be applied (bad entry, missing hardlink target...)."""


class ExtractionError(PybuildlessError):
    """The root refused a write (permissions, full disk, read-only filesystem)."""


@dataclass(frozen=True)
class ExtractStats:
    """What extracting a layer applied, and the digests of the stream as it was read."""
    entries: int
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    specials: int
    whiteouts: int
    skipped: int
    uncompressed_size: int
    diff_id: Digest
    size: int  # of the blob as read (compressed)
    digest: Digest  # of the blob as read


@dataclass
class _Counts:
    """Entries applied so far, by kind."""
    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0
    whiteouts: int = 0
    skipped: int = 0


def extract_layer(
    blob: BinaryIO,
    root: Path | str,
    *,
    ignore: IgnoreList | None = None,
    same_owner: bool | None = None,
    allow_devices: bool = True,
    expect_diff_id: Digest | None = None,
    expect_digest: Digest | None = None,
    max_uncompressed: int | None = None,
    whiteouts: bool = True,
    root_entry: bool = True,
) -> ExtractStats:
    """Apply the layer ``blob`` (gzip, zstd or plain tar, sniffed) onto ``root``.

    ``same_owner`` (default: running as root) applies the entries' uid/gid;
    devices need root and ``allow_devices``. The stream is read to EOF; the
    blob digest and the diff_id are computed on the way and checked against
    ``expect_digest``/``expect_diff_id`` when given (a mismatch raises after
    the layer was applied: verify blobs before extracting when that matters).
    ``max_uncompressed`` bounds the tar size (decompression bombs).
    ``whiteouts=False`` treats ``.wh.*`` names as ordinary files: for
    ``ADD archive.tar``, which is not an image layer.
    ``root_entry=False`` ignores the archive's ``./`` entry (ADD leaves the destination
    directory's metadata alone).
    """
    if same_owner is None:
        same_owner = os.geteuid() == 0
    raw = HashingReader(blob)
    decompressed = ahead = None
    applier = _Applier(Path(root), ignore or IgnoreList.empty(), same_owner, allow_devices and os.geteuid() == 0,
                       whiteouts, root_entry)
    current = "(header)"
    try:
        decompressed = open_decompressed(raw, threaded=True)
        reader = HashingReader(decompressed, limit=max_uncompressed)
        ahead = ReadAhead(reader, _CHUNK, _READ_AHEAD)  # inflating and hashing beside the parsing
        try:
            tar = tarfile.TarFile(fileobj=TarStream(ahead, _CHUNK), errors="surrogateescape",
                                  tarinfo=FastTarInfo)
        except tarfile.ReadError as e:
            if reader.size != 0:
                raise LayerFormatError(f"layer is not a tar archive: {e}") from None
            tar = None  # an empty blob is an empty layer
        while tar is not None and (member := tar.next()) is not None:
            current = member.name
            applier.apply(tar, member)
            tar.members.clear()  # keep memory flat
        current = "(end of layer)"
        applier.finish()
        while ahead.read(_CHUNK):  # trailing bytes after the tar end blocks are part of the diff_id
            pass
        raw.drain()
    except JobFailed as e:
        raise _failure(e.error, e.name) from None
    except (tarfile.TarError, EOFError, zstd_error(), OSError) as e:
        raise _failure(e, current) from None
    finally:
        applier.close()
        if ahead is not None:
            ahead.close()
        if decompressed is not None:
            decompressed.close()  # stops the inflating thread on errors too
    if expect_diff_id is not None and reader.digest != expect_diff_id:
        raise DigestMismatchError(f"layer diff_id is {reader.digest}, expected {expect_diff_id}")
    if expect_digest is not None and raw.digest != expect_digest:
        raise DigestMismatchError(f"layer blob digest is {raw.digest}, expected {expect_digest}")
    c = applier.counts
    return ExtractStats(
        c.entries, c.files, c.dirs, c.symlinks, c.hardlinks, c.specials, c.whiteouts, c.skipped,
        reader.size, reader.digest, raw.size, raw.digest,
    )


def _failure(e: BaseException, current: str) -> BaseException:
    """The error to report for ``e``, raised while applying ``current``."""
    if isinstance(e, (tarfile.TarError, EOFError, zstd_error(), gzip.BadGzipFile)):  # BadGzipFile: an OSError
        return LayerFormatError(f"corrupt layer at {current!r}: {e}")
    if not isinstance(e, OSError):
        return e
    if e.errno in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return ExtractionError(f"cannot apply layer entry {current!r}: {e.strerror}")
    return LayerFormatError(f"cannot apply layer entry {current!r}: {e}")


@dataclass
class _Applier(Directories):
    """Applies tar entries onto a root, with the extraction's settings."""
    root: Path
    ignore: IgnoreList
    same_owner: bool
    allow_devices: bool
    whiteouts: bool = True
    root_entry: bool = True
    counts: _Counts = field(default_factory=_Counts)

    def __post_init__(self) -> None:
        self.layer_paths: set[str] = set()
        self.layer_ancestors: set[str] = set()
        self.dir_times: list[tuple[str, int]] = []
        # mtimes of lower directories this layer modifies without carrying them:
        # put back at the end so unchanged directories keep their times
        self.touched: dict[str, int] = {}
        self.dir_modes: dict[str, int] = {}
        self.privileged = os.geteuid() == 0
        self.open_root(self.root)

    def _abs(self, preal: str, base: str) -> str:
        return posixpath.join(preal, base) if self.ignore else ""

    # -- entries ----------------------------------------------------------
    def apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        self.counts.entries += 1
        if len(self._parents) > _FD_CACHE_LIMIT:
            if self.pool is not None:
                self.pool.drain()  # its jobs use cached fds
            self._drop_cache()
        rel = secure.check_name(m.name)
        if rel == "":
            if self.root_entry:
                self._apply_root(m)
            return
        parent, base = split(rel)
        if self.whiteouts and base.startswith(WHITEOUT_PREFIX):
            self.leave_fresh_mode()
            apply_whiteout(self, parent, base)
            return
        found = None
        if self.pool is not None and (rel not in self.layer_paths or rel in self.fresh):
            found = self.fresh_dir(parent)
        if found is None:
            self.leave_fresh_mode()
            try:
                found = self.parent(parent, create=True)
            except NotADirectoryError:
                raise LayerFormatError(f"{m.name}: a parent path component is not a directory") from None
        pfd, preal = found
        target_abs = self._abs(preal, base)
        if self.ignore and self.ignore.is_ignored(target_abs):
            log.debug("not extracting ignored path %s", target_abs)
            self.counts.skipped += 1
            return
        if m.islnk() and secure.check_name(m.linkname) == rel:
            return  # a hardlink to itself: nothing to do (and nothing to remove first)
        if m.ischr() or m.isblk():
            if not self.allow_devices:
                log.warning("skipping device node %s (needs root)", m.name)
                self.counts.skipped += 1
                return
        self._touch(parent, pfd)
        self.layer_paths.add(rel)
        p = parent
        while p and p not in self.layer_ancestors:
            self.layer_ancestors.add(p)
            p = split(p)[0]
        existing = self._existing_mode(rel, pfd, base)
        if existing is not None and not (m.isdir() and stat.S_ISDIR(existing)):
            self.leave_fresh_mode()
            self._remove(pfd, base, target_abs, existing)
        if m.isreg():
            if self.pool is not None and m.size <= _POOL_FILE_MAX and not m.issparse():
                data = member_data(tar, m)
                self.pool.submit(pfd, m.name, m.size, new_file, pfd, base, data, m, self.same_owner)
                self.counts.files += 1
            else:
                self._file(tar, m, pfd, base)
        elif m.isdir():
            created = existing is None or not stat.S_ISDIR(existing)
            if created:
                os.mkdir(base, 0o700, dir_fd=pfd)
            self._dir(m, pfd, base, rel, created)
        elif m.issym():
            if self.pool is not None:
                self.pool.submit(pfd, m.name, 0, new_symlink, pfd, base, m, self.same_owner)
            else:
                new_symlink(pfd, base, m, self.same_owner)
            self.counts.symlinks += 1
        elif m.islnk():
            if self.pool is not None:
                self.pool.drain()  # the target may be waiting in it
            self._hardlink(m, pfd, base, rel)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            if not (0 <= m.devmajor < 2**32 and 0 <= m.devminor < 2**32):
                raise LayerFormatError(f"{m.name}: device numbers out of range")
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
            entrymeta.apply_to_special(pfd, base, m, same_owner=self.same_owner)
            self.counts.specials += 1
        else:
            log.warning("skipping %s: unsupported tar entry type %r", m.name, m.type)
            self.counts.skipped += 1

    def _existing_mode(self, rel: str, pfd: int, base: str) -> int | None:
        """The file type and mode of what is at ``base`` now (None: nothing)."""
        if self.pool is not None:  # rel is new, or a directory this layer made
            return stat.S_IFDIR if rel in self.fresh else None
        try:
            return os.lstat(base, dir_fd=pfd).st_mode
        except FileNotFoundError:
            return None

    def _touch(self, rel: str, fd: int) -> None:
        if rel not in self.touched and rel not in self.layer_paths:
            self.touched[rel] = os.stat(fd).st_mtime_ns

    def _remove(self, pfd: int, base: str, target_abs: str, mode: int) -> None:
        is_dir = stat.S_ISDIR(mode)
        if is_dir and self.ignore and self.ignore.contains_ignored(target_abs):
            raise LayerSecurityError(f"layer replaces {target_abs}, which holds protected paths")
        secure.remove_in_dir(pfd, base)
        if is_dir or stat.S_ISLNK(mode):
            self._drop_cache_keep(pfd)  # cached parents may lie in (or behind) what was removed

    def _file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(m)
            remaining = m.size
            while remaining > 0:
                chunk = src.read(min(_CHUNK, remaining))
                if not chunk:
                    raise LayerFormatError(f"{m.name}: unexpected end of layer data")
                remaining -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            entrymeta.apply_to_file(fd, m, same_owner=self.same_owner)
        finally:
            os.close(fd)
        self.counts.files += 1

    def _dir(self, m: tarfile.TarInfo, pfd: int, base: str, rel: str, created: bool) -> None:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            deferred = entrymeta.apply_to_dir(fd, m, same_owner=self.same_owner, privileged=self.privileged,
                                              fresh=created)
            if self.pool is not None:
                self.fresh.add(rel)
                if rel not in self._parents:  # its entries come next: keep the fd
                    self._parents[rel], fd = (fd, self._image_path(fd)), -1
        finally:
            if fd >= 0:
                os.close(fd)
        if deferred is not None:
            self.dir_modes[rel] = deferred  # put back at the end of the layer
        self.dir_times.append((rel, entrymeta.mtime_ns(m)))  # children would change it: set at the end
        self.counts.dirs += 1

    def _apply_root(self, m: tarfile.TarInfo) -> None:
        if not m.isdir():
            raise LayerSecurityError(f"layer entry {m.name!r} would replace the root with a non-directory")
        if self.in_place:
            return  # never touch the metadata of the machine's own /
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.rootfd)
        try:
            entrymeta.apply_to_root(fd, m, same_owner=self.same_owner)
        finally:
            os.close(fd)
        self.dir_times.append(("", entrymeta.mtime_ns(m)))

    def _hardlink(self, m: tarfile.TarInfo, pfd: int, base: str, rel: str) -> None:
        target = secure.check_name(m.linkname)
        if not target:
            raise LayerSecurityError(f"{m.name}: hardlink to the root")
        tparent, tbase = split(target)
        try:
            tfd, treal = self.parent(tparent, create=False)
            tst = os.lstat(tbase, dir_fd=tfd)
        except (FileNotFoundError, NotADirectoryError):
            raise LayerFormatError(f"{m.name}: hardlink target {m.linkname!r} does not exist in the root") from None
        if stat.S_ISDIR(tst.st_mode):
            raise LayerSecurityError(f"{m.name}: hardlink to a directory {m.linkname!r}")
        if self.ignore and self.ignore.is_ignored(self._abs(treal, tbase)):
            raise LayerSecurityError(f"{m.name}: hardlink to a protected path {m.linkname!r}")
        # linkat without AT_SYMLINK_FOLLOW: a link to a symlink is a link to the symlink itself.
        os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISREG(tst.st_mode):
            # The link entry's owner, xattrs, mode and times go to the file it names, as Docker's and
            # BuildKit's extraction does (moby v20.10.24 pkg/archive/archive.go createTarFile: Lchown,
            # Lsetxattr, then handleLChmod and Chtimes for a TypeLink to a non-symlink): a tar whose link
            # entry says other than its target gives BuildKit's file. The owner only when it differs: a
            # chown drops security.capability, which a link entry of ours does not carry again
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                if self.same_owner and (tst.st_uid, tst.st_gid) != (m.uid, m.gid):
                    owners.fchown_or_record(fd, m.uid, m.gid)
                entrymeta.set_xattrs(fd, m)
                os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid
                os.utime(fd, ns=(entrymeta.mtime_ns(m),) * 2)
            finally:
                os.close(fd)
        self.counts.hardlinks += 1

    # -- end of layer -----------------------------------------------------
    def finish(self) -> None:
        self.leave_fresh_mode()
        carried = {rel for rel, _ in self.dir_times}
        restore = [(rel, ns) for rel, ns in self.touched.items() if rel not in carried]
        for rel, ns in restore + self.dir_times:
            if rel == "":
                if not self.in_place:
                    os.utime(self.root, ns=(ns, ns))
                continue
            parent, base = split(rel)
            try:
                pfd, _ = self.parent(parent, create=False)
                if stat.S_ISDIR(os.lstat(base, dir_fd=pfd).st_mode):
                    os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed later in the same layer
        for rel in sorted(self.dir_modes, key=lambda r: -r.count("/")):  # children first
            parent, base = split(rel)
            try:
                pfd, _ = self.parent(parent, create=False)
                if stat.S_ISDIR(os.lstat(base, dir_fd=pfd).st_mode):  # not a symlink: chmod cannot escape
                    os.chmod(base, self.dir_modes[rel], dir_fd=pfd)
            except (FileNotFoundError, NotADirectoryError):
                continue
