"""Build-context sources (--context) and Dockerfile lookup (--dockerfile)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from pybuildless.builder.context import ContextError, open_context, resolve_dockerfile
from pybuildless.errors import UsageError


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], compress: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buf.getvalue()
    if compress == "gz":
        return gzip.compress(raw)
    if compress == "zst":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, linkname: str = "",
          mtime: int = 1_600_000_000) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = mtime
    return info


SAMPLE = [
    (entry("./"), b""),
    entry("./app", tarfile.DIRTYPE, mode=0o755),
    (entry("./app/main.py", mode=0o755), b"print('hi')\n"),
    (entry("./Dockerfile"), b"FROM scratch\n"),
    entry("./app/link", tarfile.SYMTYPE, linkname="/etc/passwd"),
    entry("./app/hard", tarfile.LNKTYPE, linkname="app/main.py"),
    entry("./ro", tarfile.DIRTYPE, mode=0o555),
    (entry("./ro/inside"), b"x"),
    entry("./fifo", tarfile.FIFOTYPE),
]


def check_sample(root: Path) -> None:
    assert (root / "Dockerfile").read_bytes() == b"FROM scratch\n"
    main = root / "app/main.py"
    assert main.read_text() == "print('hi')\n"
    assert main.stat().st_mode & 0o7777 == 0o755
    assert main.stat().st_mtime == 1_600_000_000
    assert os.readlink(root / "app/link") == "/etc/passwd"  # verbatim, not followed
    assert (root / "app/hard").stat().st_ino == main.stat().st_ino
    assert (root / "ro").stat().st_mode & 0o7777 == 0o555
    assert (root / "ro/inside").read_bytes() == b"x"
    assert not (root / "fifo").exists()


@pytest.mark.parametrize("compress", ["", "gz", "zst"])
def test_tar_file_context(tmp_path: Path, compress: str) -> None:
    archive = tmp_path / f"ctx.tar{'.' + compress if compress else ''}"
    archive.write_bytes(tar_bytes(SAMPLE, compress))
    work = tmp_path / "work"
    context = open_context(f"tar://{archive}", workdir=work)
    assert work in context.root.parents
    check_sample(context.root)
    assert resolve_dockerfile("Dockerfile", context.root, cwd=tmp_path) == context.root / "Dockerfile"
    context.cleanup()
    assert not context.root.exists()


def test_compression_is_sniffed_not_named(tmp_path: Path) -> None:
    archive = tmp_path / "context.tar"  # gzip content under a plain name
    archive.write_bytes(tar_bytes(SAMPLE, "gz"))
    with open_context(f"tar://{archive}", workdir=tmp_path / "w") as context:
        check_sample(context.root)


def test_tar_stdin_context(tmp_path: Path) -> None:
    stdin = io.BytesIO(tar_bytes(SAMPLE, "gz"))
    with open_context("tar://stdin", stdin=stdin, workdir=tmp_path / "w") as context:
        check_sample(context.root)
        root = context.root
    assert not root.exists()


def test_tar_from_a_pipe(tmp_path: Path) -> None:
    """stdin is not seekable: the format sniffing must not need to seek."""
    read_fd, write_fd = os.pipe()
    data = tar_bytes(SAMPLE, "zst")
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.write(write_fd, data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        with open_context("tar://stdin", stdin=pipe, workdir=tmp_path / "w") as context:
            check_sample(context.root)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("prefix", ["", "dir://"])
def test_directory_context(tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    context = open_context(f"{prefix}{ctx}", workdir=tmp_path / "w")
    assert context.root == ctx.resolve()
    context.cleanup()  # never deletes a user's directory
    assert (ctx / "Dockerfile").exists()
    monkeypatch.chdir(tmp_path)
    assert open_context(f"{prefix}ctx", workdir=tmp_path / "w").root == ctx.resolve()


@pytest.mark.parametrize("spec, message", [
    ("gs://bucket/ctx.tar.gz", "gs:// build contexts are not supported"),
    ("https://acct.blob.core.windows.net/ctx/ctx.tar.gz", "Azure blob storage build contexts are not supported"),
    ("ftp://example.com/ctx.tar.gz", "ftp:// build contexts are not supported"),
    ("dir:///no/such/dir", "does not exist"),
    ("/no/such/dir", "does not exist"),
    ("tar:///no/such.tar.gz", "tar file /no/such.tar.gz does not exist"),
    ("tar://", "missing tar file path"),
])
def test_bad_context_specs(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ContextError, match=message) as info:
        open_context(spec, workdir=tmp_path / "w")
    assert isinstance(info.value, UsageError)
    assert f"--context={spec}" in str(info.value)


def test_file_given_as_directory_context(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ContextError, match="is not a directory"):
        open_context(str(tmp_path / "f"), workdir=tmp_path / "w")
    with pytest.raises(ContextError, match="is a directory, not a tar file"):
        open_context(f"tar://{tmp_path}", workdir=tmp_path / "w")


@pytest.mark.parametrize("entries, message", [
    ([(entry("../evil"), b"x")], r"'\.\.'"),
    ([(entry("a/../../evil"), b"x")], r"'\.\.'"),
    ([(entry("/etc/evil"), b"x")], "absolute path"),
    ([entry("link", tarfile.SYMTYPE, linkname="/tmp"), (entry("link/evil"), b"x")], "through the symlink link"),
    ([entry("up", tarfile.SYMTYPE, linkname="../.."), (entry("up/x/evil"), b"x")], "through the symlink"),
    ([entry("h", tarfile.LNKTYPE, linkname="/etc/passwd")], "absolute path"),
    ([entry("h", tarfile.LNKTYPE, linkname="../outside")], r"'\.\.'"),
    ([entry("h", tarfile.LNKTYPE, linkname="missing")], "not in the archive before it"),
    ([entry("s", tarfile.SYMTYPE, linkname="/etc/passwd"), entry("h", tarfile.LNKTYPE, linkname="s")],
     "must point to a regular file"),
    ([(entry("f"), b"x"), (entry("f/g"), b"y")], "non-directory parent"),
])
def test_hostile_tar_entries_are_rejected(tmp_path: Path, entries: list, message: str) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(tar_bytes(entries))
    work = tmp_path / "w"
    with pytest.raises(ContextError, match=message):
        open_context(f"tar://{archive}", workdir=work)
    assert list(work.iterdir()) == []  # the partial extraction is removed
    assert not (tmp_path / "evil").exists()


def test_symlink_then_file_of_same_name_replaces_the_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    archive = tmp_path / "ctx.tar"
    archive.write_bytes(tar_bytes([entry("f", tarfile.SYMTYPE, linkname=str(outside)), (entry("f"), b"new")]))
    with open_context(f"tar://{archive}", workdir=tmp_path / "w") as context:
        assert not (context.root / "f").is_symlink()
        assert (context.root / "f").read_bytes() == b"new"
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("data", [b"not a tar at all" * 100, gzip.compress(b"x" * 10)[:-8],
                                  b"\x28\xb5\x2f\xfd garbage"])
def test_corrupt_archives(tmp_path: Path, data: bytes) -> None:
    archive = tmp_path / "bad.tar"
    archive.write_bytes(data)
    with pytest.raises(ContextError, match="--context=tar://"):
        open_context(f"tar://{archive}", workdir=tmp_path / "w")


def test_context_sub_path(tmp_path: Path) -> None:
    archive = tmp_path / "ctx.tar"
    archive.write_bytes(tar_bytes(SAMPLE))
    with open_context(f"tar://{archive}", workdir=tmp_path / "w", sub_path="app") as context:
        assert context.root.name == "app" and (context.root / "main.py").exists()
    with pytest.raises(ContextError, match="--context-sub-path=nope"):
        open_context(f"tar://{archive}", workdir=tmp_path / "w", sub_path="nope")
    # sub-path cannot climb out of the context
    with open_context(f"tar://{archive}", workdir=tmp_path / "w", sub_path="../../app") as context:
        assert (context.root / "main.py").exists()


def test_resolve_dockerfile_kaniko_order(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub/Build.df").write_text("FROM scratch\n")
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # relative to the context when not found relative to the cwd
    assert resolve_dockerfile("sub/Build.df", ctx, cwd=cwd) == ctx / "sub/Build.df"
    assert resolve_dockerfile("Dockerfile", ctx, cwd=cwd) == ctx / "Dockerfile"
    # the cwd wins when the file exists there (Kaniko checks it first)
    (cwd / "Dockerfile").write_text("FROM busybox\n")
    assert resolve_dockerfile("Dockerfile", ctx, cwd=cwd) == cwd / "Dockerfile"
    # absolute paths as given
    assert resolve_dockerfile(str(ctx / "sub/Build.df"), tmp_path, cwd=cwd) == ctx / "sub/Build.df"


@pytest.mark.parametrize("value, message", [
    ("missing.df", "no Dockerfile found"),
    ("sub", "is a directory"),
    ("ftp://example.com/Dockerfile", "only http:// and https:// Dockerfiles can be fetched"),
    ("", "empty path"),
])
def test_resolve_dockerfile_errors(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(ContextError, match=message) as info:
        resolve_dockerfile(value, tmp_path, cwd=tmp_path)
    assert "--dockerfile" in str(info.value)
