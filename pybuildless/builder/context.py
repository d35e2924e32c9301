"""Build-context sources as Kaniko's ``--context`` accepts them, and ``--dockerfile`` lookup.

Supported: a directory path, ``dir://DIR``, ``tar://FILE`` (plain, gzip,
bzip2, xz or zstd tar; sniffed from the content, not the name), ``tar://stdin``,
``git://HOST/PATH[#REF[#COMMIT]]`` (builder/gitcontext.py), ``s3://BUCKET[/KEY]``
(builder/s3context.py) and ``https://HOST/PATH`` of a tarball. ``gs://`` and Azure
blob URLs are refused with one line naming what is supported.

Tar contexts are unpacked into a fresh directory under ``workdir`` by a small
extractor that refuses entries that could land outside it: absolute names,
``..`` components, writes through a symlink, hardlinks to anything but a
regular file already extracted. Symlinks themselves are created with their
targets verbatim (absolute targets are legitimate; COPY resolves them inside
the context). Device nodes and FIFOs are skipped. Ownership is not kept:
context files are copied as 0:0 anyway.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from pybuildless.builder.options import GitOptions
from pybuildless.errors import UsageError
from pybuildless.fs import inroot

if TYPE_CHECKING:
    import tarfile

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
SUPPORTED = ("a directory, dir://DIR, tar://FILE.tar[.gz], tar://stdin, git://HOST/REPO[#REF[#COMMIT]], "
             "s3://BUCKET/KEY or https://HOST/FILE.tar.gz")
# Kaniko v1.24.0 pkg/constants: Azure blob hosts, which Kaniko reads with the Azure SDK.
_AZURE_BLOB = re.compile(r"^https://.+?\.blob\.core\.(windows\.net|chinacloudapi\.cn|cloudapi\.de|usgovcloudapi\.net)/.+")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ContextError(UsageError):
    """A --context (or --dockerfile) value that cannot be used; the message names the flag."""


@dataclass(frozen=True)
class BuildContext:
    """The build context as a local directory, and how to give it up after the build."""

    root: Path
    source: str
    _cleanup: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def cleanup(self) -> None:
        """Remove what opening the context created (an unpacked tar); a directory is left alone."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "BuildContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def open_context(spec: str, *, stdin: BinaryIO | None = None, workdir: Path, sub_path: str = "",
                 flag: str = "--context", git: GitOptions | None = None) -> BuildContext:
    """Make the context named by ``spec`` available as a local directory."""
    match = _SCHEME.match(spec)
    scheme, rest = (match.group(1).lower(), match.group(2)) if match else ("", spec)
    if scheme in ("", "dir"):
        context = _directory_context(spec, rest, flag)
    elif scheme == "tar":
        context = _tar_context(spec, rest, stdin, workdir, flag)
    elif scheme == "git":
        from pybuildless.builder import gitcontext

        context = _fetched(spec, workdir, lambda dest: gitcontext.clone_context(spec, rest, dest, git or GitOptions()))
    elif scheme == "s3":
        from pybuildless.builder import s3context

        context = _downloaded(spec, workdir, flag, lambda path: s3context.download(spec, path))
    elif scheme == "https" and not _AZURE_BLOB.match(spec):
        context = _downloaded(spec, workdir, flag, lambda path: _https_download(spec, path, flag))
    else:
        what = "Azure blob storage" if _AZURE_BLOB.match(spec) else f"{scheme}://"
        raise ContextError(f"{flag}={spec}: {what} build contexts are not supported here (use {SUPPORTED})")
    if sub_path:
        return _with_sub_path(context, sub_path)
    return context


def _directory_context(spec: str, path: str, flag: str) -> BuildContext:
    if not path:
        raise ContextError(f"{flag}={spec}: empty directory path")
    root = Path(path).expanduser()
    if not root.exists():
        raise ContextError(f"{flag}={spec}: directory {root} does not exist")
    if not root.is_dir():
        raise ContextError(f"{flag}={spec}: {root} is not a directory")
    return BuildContext(root=root.resolve(), source=spec)


def _tar_context(spec: str, path: str, stdin: BinaryIO | None, workdir: Path, flag: str) -> BuildContext:
    if path == "stdin":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return _unpack(spec, stream, workdir, flag)
    if not path:
        raise ContextError(f"{flag}={spec}: missing tar file path")
    try:
        with open(path, "rb") as f:
            return _unpack(spec, f, workdir, flag)
    except FileNotFoundError:
        raise ContextError(f"{flag}={spec}: tar file {path} does not exist") from None
    except IsADirectoryError:
        raise ContextError(f"{flag}={spec}: {path} is a directory, not a tar file (use dir://)") from None


def _unpack(spec: str, stream: BinaryIO, workdir: Path, flag: str) -> BuildContext:
    workdir.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="buildcontext-", dir=workdir))
    try:
        extract_context_tar(stream, dest, what=f"{flag}={spec}")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return BuildContext(root=dest, source=spec, _cleanup=lambda: shutil.rmtree(dest, ignore_errors=True))


def _fetched(spec: str, workdir: Path, fetch: Callable[[Path], None]) -> BuildContext:
    workdir.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="buildcontext-", dir=workdir))
    try:
        fetch(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return BuildContext(root=dest, source=spec, _cleanup=lambda: shutil.rmtree(dest, ignore_errors=True))


def _downloaded(spec: str, workdir: Path, flag: str, download: Callable[[Path], None]) -> BuildContext:
    """A tarball fetched to a temp file, then unpacked like tar://."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="context-", suffix=".tar", dir=workdir)
    os.close(fd)
    try:
        download(Path(name))
        with open(name, "rb") as f:
            return _unpack(spec, f, workdir, flag)
    finally:
        os.unlink(name)


def _https_download(spec: str, path: Path, flag: str) -> None:
    # Kaniko's HTTPSTar: a plain GET, any status but 200 fails.
    import requests

    try:
        with requests.get(spec, stream=True, timeout=(30, 300)) as resp:
            if resp.status_code != 200:
                raise ContextError(f"{flag}={spec}: HTTP {resp.status_code} {resp.reason}")
            with open(path, "wb") as out:
                for chunk in resp.iter_content(1 << 20):
                    out.write(chunk)
    except requests.RequestException as e:
        raise ContextError(f"{flag}={spec}: cannot download: {e}") from None


def _with_sub_path(context: BuildContext, sub_path: str) -> BuildContext:
    root = inroot.resolve(context.root, sub_path)
    if not root.is_dir():
        context.cleanup()
        raise ContextError(f"--context-sub-path={sub_path}: no such directory in the build context")
    return BuildContext(root=root, source=context.source, _cleanup=context._cleanup)


def _decompressed(stream: BinaryIO) -> BinaryIO:
    """Undo zstd here; tarfile's stream mode sniffs gzip, bzip2 and xz itself."""
    reader = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    if reader.peek(4)[:4] == _ZSTD_MAGIC:  # type: ignore[union-attr]
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(reader)  # type: ignore[return-value]
    return reader  # type: ignore[return-value]


def _clean_name(name: str, what: str, kind: str = "entry") -> list[str]:
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
        raise ContextError(f"{what}: tar {kind} {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ContextError(f"{what}: tar {kind} {name!r} points outside the context ('..')")
    return parts


def _parent_dir(dest: Path, parts: list[str], what: str, name: str, *, create: bool) -> Path:
    """The entry's parent directory, made of real directories only (never a symlink)."""
    current = dest
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create:
                raise ContextError(f"{what}: tar entry {name!r} refers to a missing directory") from None
            os.mkdir(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ContextError(f"{what}: tar entry {name!r} would be written through the symlink "
                               f"{current.relative_to(dest)}")
        if not stat.S_ISDIR(st.st_mode):
            raise ContextError(f"{what}: tar entry {name!r} has a non-directory parent")
    return current


def _clear(path: Path, *, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def extract_context_tar(stream: BinaryIO, dest: Path, *, what: str = "--context") -> None:
    """Unpack a (possibly compressed) tar stream into the empty directory ``dest``."""
    import tarfile

    dir_times: list[tuple[Path, int, int]] = []
    try:
        with tarfile.open(fileobj=_decompressed(stream), mode="r|*") as archive:
            for member in archive:
                parts = _clean_name(member.name, what)
                if not parts:  # the archive's "./" entry
                    continue
                parent = _parent_dir(dest, parts, what, member.name, create=True)
                target = parent / parts[-1]
                mode = member.mode & 0o7777
                if member.isdir():
                    _clear(target, keep_dir=True)
                    if not target.exists():
                        os.mkdir(target, 0o700)
                    dir_times.append((target, mode, int(member.mtime)))
                    continue
                _clear(target, keep_dir=False)
                if member.isreg():
                    source = archive.extractfile(member)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)  # type: ignore[misc]
                        os.fchmod(out.fileno(), mode)
                elif member.issym():
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    _hardlink(dest, member, target, what)
                else:
                    log.warning("%s: skipping special file %s in the context tar", what, member.name)
                    continue
                os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
    except ContextError:
        raise
    except Exception as exc:
        if _is_format_error(exc):
            raise ContextError(f"{what}: not a valid or complete tar archive: {exc}") from exc
        raise
    # Directory modes last, so read-only directories did not block their children.
    for path, mode, mtime in reversed(dir_times):
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))


def _is_format_error(exc: Exception) -> bool:
    """Errors that mean "bad archive" rather than "the machine has a problem"."""
    import lzma
    import tarfile
    import zlib

    if isinstance(exc, (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno is None  # gzip.BadGzipFile and friends
    return type(exc).__module__.startswith("zstandard") or "Zstd" in type(exc).__name__


def _hardlink(dest: Path, member: tarfile.TarInfo, target: Path, what: str) -> None:
    link_parts = _clean_name(member.linkname, what, kind=f"hardlink target of {member.name!r}:")
    if not link_parts:
        raise ContextError(f"{what}: tar hardlink {member.name!r} has an empty target")
    source = _parent_dir(dest, link_parts, what, member.linkname, create=False) / link_parts[-1]
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        raise ContextError(f"{what}: tar hardlink {member.name!r} points to {member.linkname!r}, "
                           "which is not in the archive before it") from None
    if not stat.S_ISREG(st.st_mode):
        raise ContextError(f"{what}: tar hardlink {member.name!r} must point to a regular file")
    os.link(source, target, follow_symlinks=False)


def resolve_dockerfile(dockerfile: str, context_root: Path, *, cwd: Path | None = None,
                       workdir: Path | None = None) -> Path:
    """Find the Dockerfile Kaniko's way: as given (absolute or relative to the cwd), else in the
    context; an http(s):// URL is downloaded (Kaniko v1.24.0 pkg/dockerfile ParseStages)."""
    match = _SCHEME.match(dockerfile)
    if match and match.group(1).lower() in ("http", "https") and workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="Dockerfile-", dir=workdir)
        os.close(fd)
        _https_download(dockerfile, Path(name), "--dockerfile")
        return Path(name)
    if match:
        raise ContextError(f"--dockerfile={dockerfile}: only http:// and https:// Dockerfiles can be fetched; "
                           "give a path (absolute, relative to the working directory, or inside the context)")
    if not dockerfile:
        raise ContextError("--dockerfile: empty path")
    given = Path(dockerfile)
    base = cwd if cwd is not None else Path.cwd()
    candidates = [given] if given.is_absolute() else [base / given, context_root / given]
    for candidate in candidates:
        if candidate.is_dir():
            raise ContextError(f"--dockerfile={dockerfile}: {candidate} is a directory, not a Dockerfile")
        if candidate.is_file():
            return candidate.resolve()
    looked = " or ".join(str(c) for c in candidates)
    raise ContextError(f"--dockerfile={dockerfile}: no Dockerfile found (looked for {looked}); "
                       "give a valid path to a Dockerfile within the build context with --dockerfile")
