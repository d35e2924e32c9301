"""COPY and ADD of local files: source resolution and secure writes into a stage root.

Rules (BuildKit's, see dockerfile-semantics.md §6.6):
- context sources are clamped to the context (leading ``/`` and ``..`` cannot escape);
- wildcards follow Go's filepath.Match per component, ``*`` matches dotfiles, and a
  wildcard matching nothing copies nothing; a missing literal path is an error;
- a directory source copies its contents; the source path itself is followed when it
  is a symlink, symlinks inside copied directories stay links; hardlinks are kept;
- ownership: context files become 0:0, ``--from`` keeps the source owners, ``--chown``
  overrides both; ``.dockerignore`` applies to context sources only;
- destination: relative to WORKDIR, a trailing ``/`` (kept after expansion) or several
  sources mean "into a directory"; missing parents are created.
Writes never follow a symlink out of the destination root: every destination directory is
resolved and made through fs/inroot.py, and the final component is never followed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass, field
from typing import Iterator

from pybuildless.builder.copysources import (CopyRequest, PathMatcher, SourceRoot, _excluded, _ignored,
                                             has_wildcard, resolve_in_root, resolve_sources)
from pybuildless.fs import inroot, owners
from pybuildless.errors import BuildError, PybuildlessError

_DIR_FD_LIMIT = 256  # destination directories kept open while copying a tree

__all__ = ["CopyRequest", "CopyResult", "PathMatcher", "SourceRoot", "copy_files", "has_wildcard",
           "resolve_sources", "source_digest"]

@dataclass
class CopyResult:
    """The paths a COPY or ADD wrote into the stage root."""

    touched: list[str] = field(default_factory=list)  # in-root absolute paths written


def copy_files(src_root: SourceRoot, req: CopyRequest, dest_root: str) -> CopyResult:
    """Copy the request's sources into ``dest_root`` (a stage root directory, or /)."""
    writer = _Writer(src_root, req, dest_root)
    try:
        _copy(src_root, req, writer, writer.root.is_dir)
        writer.finish()
    finally:
        writer.close()
    return CopyResult(touched=writer.touched)


def source_digest(src_root: SourceRoot, req: CopyRequest) -> str:
    """A content hash of everything the request would copy, for cache keys.

    It covers each entry's path, type, mode, link target and content, in copy
    order, and never mtimes, owners or inode numbers: a fresh checkout of the
    same files gives the same digest. Files excluded by .dockerignore or
    --exclude do not count.
    """
    hasher = _Hasher(src_root, req)
    _copy(src_root, req, hasher, lambda dest: False)
    return hasher.digest()


def _copy(src_root: SourceRoot, req: CopyRequest, sink: "_Writer", dest_is_dir) -> None:
    """Each source is copied on its own, in order, as BuildKit does (one copy action per source,
    dockerfile2llb/convert.go dispatchCopyFileOp@eeb7b65ab7d6; fsutil copy/copy.go Copy and
    prepareTargetDir@0834f99b7b85): a file goes *into* the destination when it ends with ``/``
    (or is ``.``), or when it is a directory at that moment (an earlier source may have made
    it one); otherwise it *becomes* the destination. So ``COPY nomatch* foo /hello`` writes the
    file /hello, and ``COPY a b /x`` leaves /x holding b. A directory's contents go into it."""
    sources = resolve_sources(src_root, req)
    dest = req.dest if req.dest.startswith("/") else posixpath.join(req.workdir or "/", req.dest)
    into_dir = req.dest.endswith("/") or req.dest in (".", "")
    for rel, pivot in sources:
        # Hardlinks are kept within one source only: fsutil makes a new copier (and inode map)
        # for every source and every wildcard match (copy/copy.go@0834f99b7b85 Copy, newCopier).
        sink.links = {}
        host = resolve_in_root(src_root.root, rel) if rel != "." else src_root.root
        if not os.path.exists(host):
            # a wildcard matched a link to nothing: BuildKit follows the source (FollowSymlinks)
            # and fails to stat its target (fsutil copy/copy.go@0834f99b7b85 copy: "failed to stat")
            raise BuildError(f"COPY source {rel!r} not found in the {src_root.description}: a link to a missing path")
        st = os.stat(host)
        if req.unpack is not None and stat.S_ISREG(st.st_mode) and not req.parents and req.unpack(host):
            sink.unpack(host, dest)
            continue
        if req.parents:
            # the path below the pivot's match: a pivot may hold wildcards (a*/./b), which match
            # component by component, so the match has as many components as the pivot
            keep = "/".join(rel.split("/")[pivot.count("/") + 1:]) if pivot else rel
            target = posixpath.join(dest, keep) if keep != "." else dest
        elif stat.S_ISDIR(st.st_mode):
            target = dest
        elif into_dir or dest_is_dir(dest):
            target = posixpath.join(dest, posixpath.basename(rel))  # a link of that name is replaced
        else:
            # The destination path itself is followed when it is a symlink (fsutil's Copy resolves
            # it with fs.RootPath, final component included): COPY f /link writes the link's target.
            target = sink.follow(dest)
        if stat.S_ISDIR(st.st_mode):
            sink.copy_tree(host, rel, target)
        else:
            sink.ensure_parents(posixpath.dirname(target) or "/")
            sink.copy_entry(host, st, target)


class _Writer:
    def __init__(self, src_root: SourceRoot, req: CopyRequest, dest_root: str) -> None:
        self.src_root = src_root
        self.req = req
        self.root = inroot.Root(dest_root) if dest_root else None
        self.touched: list[str] = []
        self.links: dict[tuple[int, int], str] = {}  # source inode -> in-root path of its first copy
        self.dir_times: list[tuple[str, os.stat_result]] = []
        # in-root directory -> O_PATH fd resolved in the root: a tree's parents are resolved once
        self._dirs: dict[str, int] = {}

    def _host(self, target: str) -> str:
        """A host path for in-root ``target`` that reaches its directory through an fd resolved in
        the root (``/proc/self/fd/N/name``): only the last component is looked up by name, and the
        writes below never follow it."""
        parent, name = posixpath.dirname(target) or "/", posixpath.basename(target)
        fd = self._dirs.get(parent)
        if fd is None:
            fd = self._dirs[parent] = self.root.open_dir(parent)
        return f"/proc/self/fd/{fd}/{name}"

    def _trim(self) -> None:
        # Only between entries: the paths _host gave out for the current one stay valid.
        if len(self._dirs) >= _DIR_FD_LIMIT:
            self._forget_dirs("")

    def _forget_dirs(self, below: str) -> None:
        """Close the cached fds of directories at or below ``below`` (all with "")."""
        for key in [k for k in self._dirs if not below or (k + "/").startswith(below + "/")]:
            os.close(self._dirs.pop(key))

    def owner_of(self, st: os.stat_result, src: str | None = None) -> tuple[int, int]:
        if self.req.owner is not None:
            return self.req.owner
        if self.src_root.is_context:
            return (0, 0)
        recorded = owners.recorded_owner(src) if src is not None else None
        return recorded or (st.st_uid, st.st_gid)

    def follow(self, in_root_path: str) -> str:
        """``in_root_path`` with its symlinks (the last one too) resolved inside the root."""
        rel = os.path.relpath(self.root.resolve(in_root_path), self.root.path)
        return "/" if rel == "." else "/" + rel

    def ensure_parents(self, in_root_dir: str) -> None:
        """mkdir -p inside the root; new directories are 0755, owned by --chown, else as mkdir(2) makes
        them (root, and the group and set-group-ID bit of a set-group-ID parent: BuildKit chowns them only
        for --chown, moby v20.10.24 vendor/github.com/tonistiigi/fsutil/copy/copy.go Copy -> MkdirAll)."""
        try:
            self.touched.extend(self.root.makedirs(in_root_dir, mode=0o755, owner=self.req.owner))
        except NotADirectoryError as e:
            raise BuildError(f"cannot create directory {e.filename}: a file exists there") from None

    def _walk(self, host_dir: str, rel_dir: str) -> Iterator[tuple[str, str, os.stat_result]]:
        """(host path, path relative to the copied directory, lstat), parents before children.

        .dockerignore applies as Docker 20.10's context walk does (fsutil walker.go@0834f99b7b85):
        an excluded entry is left out, except a directory the walk enters for an exception
        pattern (PatternMatcher.enters), which is copied itself, its children judged one by one.
        """
        stack = [(host_dir, "")]
        while stack:
            hdir, sub = stack.pop()
            with os.scandir(hdir) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in reversed(entries):
                rel = posixpath.join(sub, e.name) if sub else e.name
                if _excluded(rel, self.req):
                    continue
                st = e.stat(follow_symlinks=False)
                ctx_rel = posixpath.join(rel_dir, rel) if rel_dir not in ("", ".") else rel
                if _ignored(self.src_root, ctx_rel) and not (
                        stat.S_ISDIR(st.st_mode) and self.src_root.ignore.enters(ctx_rel)):
                    continue
                yield e.path, rel, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append((e.path, rel))

    def copy_tree(self, host_dir: str, rel_dir: str, target: str) -> None:
        # Only the directory's contents are copied, never the directory itself: a missing
        # destination is made like any missing parent (0755, --chown's owner or 0:0, never
        # --chmod), an existing one keeps its metadata. fsutil copy/copy.go@0834f99b7b85
        # (the fsutil of BuildKit v0.8, Docker 20.10): prepareTargetDir MkdirAll()s the
        # destination with 0755 and the chowner, then copy() leaves a directory it did not
        # create itself alone (copyDirectory's created=false => no copyFileInfo).
        self.ensure_parents(target)
        for host, rel, st in self._walk(host_dir, rel_dir):
            self.copy_entry(host, st, posixpath.join(target, rel))

    def copy_entry(self, src: str, st: os.stat_result, target: str) -> None:
        mode = st.st_mode
        if not posixpath.basename(target):
            raise BuildError(f"cannot overwrite directory {target} with a file")
        self._trim()
        dst = self._host(target)
        existing = os.lstat(dst) if os.path.lexists(dst) else None
        if stat.S_ISDIR(mode):
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                raise BuildError(f"cannot copy directory onto existing file {target}")
            if existing is None:
                os.mkdir(dst)
        else:
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise BuildError(f"cannot overwrite directory {target} with a file")
                os.unlink(dst)
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and not stat.S_ISDIR(mode) and key in self.links:
                os.link(self._host(self.links[key]), dst)
                self.touched.append(target)
                return
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(src), dst)
                self._forget_dirs(target)  # a new link can change what paths below it resolve to
            elif stat.S_ISREG(mode):
                _copy_content(src, dst)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.mknod(dst, mode, st.st_rdev)
            else:
                # FIFOs and sockets are not copied: fsutil copy/copy.go@0834f99b7b85 copy() ends
                # in `return errors.Wrapf(err, "unsupported mode")` with a nil err, i.e. skips them
                return
            if st.st_nlink > 1:
                self.links[key] = target
        uid, gid = self.owner_of(st, src)
        owners.chown_or_record(dst, uid, gid)
        if not stat.S_ISLNK(mode):
            perm = stat.S_IMODE(mode)
            if self.req.chmod is not None:
                perm = self.req.chmod(mode, stat.S_ISDIR(mode))
            if not self.src_root.is_context:
                # Context files arrive without extended attributes: Docker 20.10's context
                # transfer loses them (observed with Debian's docker.io 20.10.24 BuildKit;
                # its exporter, moby pkg/archive@v20.10.24 ReadSecurityXattrToTarHeader,
                # writes no user.* either). Files from stages and images keep theirs.
                _copy_xattrs(src, dst)
            os.chmod(dst, perm)
        if stat.S_ISDIR(mode):
            self.dir_times.append((target, st))
        else:
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        self.touched.append(target)

    def unpack(self, archive: str, dest: str) -> None:
        """ADD of a local tar: unpacked into ``dest`` (see builder/archives.py for the rule)."""
        from pybuildless.builder.archives import open_decompressed
        from pybuildless.fs.extract import extract_layer

        self.ensure_parents(dest)
        try:
            with open_decompressed(archive) as stream:
                # the entries keep their own owners; the archive's ./ entry is not applied
                extract_layer(stream, str(self.root.resolve(dest)), whiteouts=False, root_entry=False)
        except (OSError, EOFError, ValueError, PybuildlessError) as e:
            name = posixpath.basename(archive)
            raise BuildError(f"cannot extract archive {name}: {e}") from None
        self.touched.append(dest)

    def finish(self) -> None:
        for target, st in reversed(self.dir_times):
            self._trim()
            os.utime(self._host(target), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def close(self) -> None:
        self._forget_dirs("")
        self.root.close()


def _copy_content(src: str, dst: str) -> None:
    """A new regular file ``dst`` (never through a link) with ``src``'s bytes, copied in the kernel."""
    with open(src, "rb") as fin:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            offset = 0
            try:
                while sent := os.sendfile(out, fin.fileno(), offset, 1 << 30):
                    offset += sent
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
                    raise
                with open(out, "wb", closefd=False) as fout:  # a filesystem without sendfile
                    shutil.copyfileobj(fin, fout, 1 << 20)
        finally:
            os.close(out)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name == owners.OWNER_XATTR:
            continue  # the copy's owner was set (or recorded) from --chown or the source already
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass  # e.g. security.selinux on a filesystem that refuses it


class _Hasher(_Writer):
    """Walks exactly like _Writer but hashes what it would write."""

    def __init__(self, src_root: SourceRoot, req: CopyRequest) -> None:
        super().__init__(src_root, req, dest_root="")
        self.h = hashlib.sha256()

    def ensure_parents(self, in_root_dir: str) -> None:
        pass

    def follow(self, in_root_path: str) -> str:
        return in_root_path

    def copy_entry(self, src: str, st: os.stat_result, target: str) -> None:
        mode = st.st_mode
        self.h.update(f"{target}\0{stat.S_IFMT(mode)}\0{stat.S_IMODE(mode):o}\0".encode())
        if stat.S_ISLNK(mode):
            self.h.update(os.readlink(src).encode())
        elif stat.S_ISREG(mode):
            with open(src, "rb") as f:
                while chunk := f.read(1 << 20):
                    self.h.update(chunk)
        self.h.update(b"\n")

    def unpack(self, archive: str, dest: str) -> None:
        self.h.update(f"unpack\0{dest}\0".encode())
        with open(archive, "rb") as f:
            while chunk := f.read(1 << 20):
                self.h.update(chunk)
        self.h.update(b"\n")

    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()
