from __future__ import annotations

import gzip
import io
import os
import stat

import pytest
import zstandard

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.fs.extract import LayerFormatError, extract_layer
from pybuildless.fs.ignore import IgnoreList
from pybuildless.image.descriptor import Digest
from tests.fs_hostile import entry, tar_bytes
from tests.privdrop import as_nobody

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for ownership and device nodes")
CAP = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # cap_net_bind_service+ep


def apply(root, *entries, **kw):
    return extract_layer(io.BytesIO(tar_bytes(list(entries))), root, **kw)


@root_only
def test_all_entry_types_with_metadata(tmp_path):
    stats = apply(
        tmp_path,
        entry("bin", "dir", mode=0o755, mtime=1000),
        entry("bin/tool", "file", b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0, mtime=2000,
              pax={"SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")}),
        entry("bin/sg", "file", b"x", mode=0o2711, uid=1000, gid=50, mtime=2001),
        entry("tmp", "dir", mode=0o1777, mtime=1000),
        entry("bin/link", "symlink", link="/etc/../bin/tool", uid=7, gid=8, mtime=3000),
        # a link entry's metadata goes to its target, as in Docker's extraction: here the target's own,
        # as tar writers write it
        entry("bin/hard", "hardlink", link="bin/tool", mode=0o4755, mtime=2000),
        entry("dev", "dir"),
        entry("dev/null", "chr", dev=(1, 3), mode=0o666),
        entry("dev/loop0", "blk", dev=(7, 0), mode=0o660),
        entry("run", "dir"),
        entry("run/fifo", "fifo", mode=0o600, uid=5, gid=6),
        entry("usr/lib/deep", "file", b"no parent entries"),
    )
    assert (stats.files, stats.dirs, stats.symlinks, stats.hardlinks, stats.specials) == (3, 4, 1, 1, 3)
    tool = os.lstat(tmp_path / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755 and tool.st_mtime == 2000
    assert os.getxattr(tmp_path / "bin/tool", "security.capability") == CAP
    sg = os.lstat(tmp_path / "bin/sg")
    assert (stat.S_IMODE(sg.st_mode), sg.st_uid, sg.st_gid) == (0o2711, 1000, 50)
    assert stat.S_IMODE(os.lstat(tmp_path / "tmp").st_mode) == 0o1777
    link = os.lstat(tmp_path / "bin/link")
    assert os.readlink(tmp_path / "bin/link") == "/etc/../bin/tool"  # verbatim
    assert (link.st_uid, link.st_gid, link.st_mtime) == (7, 8, 3000)
    assert os.lstat(tmp_path / "bin/hard").st_ino == tool.st_ino
    null = os.lstat(tmp_path / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_ISBLK(os.lstat(tmp_path / "dev/loop0").st_mode)
    fifo = os.lstat(tmp_path / "run/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and (fifo.st_uid, fifo.st_gid) == (5, 6)
    assert (tmp_path / "usr/lib/deep").read_bytes() == b"no parent entries"
    assert os.lstat(tmp_path / "bin").st_mtime == 1000, "directory times are applied after their children"


def test_devices_skipped_when_not_allowed(tmp_path, caplog):
    stats = apply(tmp_path, entry("null", "chr", dev=(1, 3)), entry("f", "file", b"x"), allow_devices=False)
    assert not os.path.lexists(tmp_path / "null")
    assert stats.skipped == 1 and (tmp_path / "f").read_bytes() == b"x"
    assert "device node" in caplog.text


def test_whiteouts_and_missing_targets(tmp_path):
    apply(tmp_path, entry("a/keep", "file", b"k"), entry("a/gone", "file", b"g"),
          entry("a/tree/x/y", "file", b"y"))
    apply(tmp_path, entry("a/.wh.gone", "file"), entry("a/.wh.tree", "file"), entry("a/.wh.never", "file"),
          entry("nodir/.wh.x", "file"), entry("a/keep/.wh.x", "file"), entry("a/.wh..wh.plnk", "file"))
    assert sorted(os.listdir(tmp_path / "a")) == ["keep"]
    assert not any(n.startswith(".wh.") for _, ds, fs in os.walk(tmp_path) for n in ds + fs)


@pytest.mark.parametrize("marker_first", [True, False])
def test_opaque_hides_only_lower_layers_whatever_the_order(tmp_path, marker_first):
    apply(tmp_path, entry("d/old", "file", b"o"), entry("d/sub/lower", "file", b"l"), entry("d/both", "file", b"1"),
          entry("other", "file", b"x"))
    same_layer = [entry("d/new", "file", b"n"), entry("d/sub/upper", "file", b"u"), entry("d/both", "file", b"2")]
    marker = [entry("d/.wh..wh..opq", "file")]
    apply(tmp_path, *(marker + same_layer if marker_first else same_layer + marker))
    assert sorted(os.listdir(tmp_path / "d")) == ["both", "new", "sub"]
    assert os.listdir(tmp_path / "d/sub") == ["upper"]
    assert (tmp_path / "d/both").read_bytes() == b"2"
    assert (tmp_path / "other").exists()


def test_type_replacements(tmp_path):
    apply(tmp_path, entry("f2d", "file", b"x"), entry("d2f/child", "file", b"c"), entry("l2d", "symlink", link="/"),
          entry("keepdir/x", "file", b"x"))
    apply(tmp_path, entry("f2d", "dir"), entry("d2f", "file", b"now a file"), entry("l2d", "dir"),
          entry("keepdir", "dir", mode=0o700))
    assert (tmp_path / "f2d").is_dir() and (tmp_path / "d2f").read_bytes() == b"now a file"
    assert (tmp_path / "l2d").is_dir() and not (tmp_path / "l2d").is_symlink()
    assert (tmp_path / "keepdir/x").exists(), "dir over dir merges"
    assert stat.S_IMODE(os.lstat(tmp_path / "keepdir").st_mode) == 0o700


def test_file_under_a_file_is_a_clear_error(tmp_path):
    apply(tmp_path, entry("f", "file", b"x"))
    with pytest.raises(LayerFormatError, match="not a directory"):
        apply(tmp_path, entry("f/g", "file", b"y"))


def test_ignore_list_protects_paths_from_writes_whiteouts_and_opaque(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/self").write_text("host")
    (tmp_path / "var/run").mkdir(parents=True)
    (tmp_path / "var/run/docker.sock").write_text("sock")
    (tmp_path / "var/lib").mkdir()
    ig = IgnoreList.of(["/proc", "/var/run"])
    stats = apply(tmp_path, entry("proc/self", "file", b"image"), entry("proc/new", "file", b"n"),
                  entry("viaLink", "symlink", link="/proc"), entry("viaLink/evil", "file", b"e"),
                  entry("var/.wh.run", "file"), entry(".wh.proc", "file"), ignore=ig)
    assert (tmp_path / "proc/self").read_text() == "host"
    assert not (tmp_path / "proc/new").exists() and not (tmp_path / "proc/evil").exists()
    assert (tmp_path / "var/run/docker.sock").exists()
    assert stats.skipped == 3
    apply(tmp_path, entry("var/.wh..wh..opq", "file"), entry(".wh..wh..opq", "file"), ignore=ig)
    assert (tmp_path / "var/run/docker.sock").read_text() == "sock"
    assert (tmp_path / "proc/self").read_text() == "host"
    assert not (tmp_path / "var/lib").exists() and not (tmp_path / "viaLink").exists()


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.ZstdCompressor().compress, lambda b: b])
def test_compressed_layers_and_diff_id(tmp_path, compress):
    raw = tar_bytes([entry("a", "file", b"data")])
    stats = extract_layer(io.BytesIO(compress(raw)), tmp_path, expect_diff_id=Digest.of_bytes(raw))
    assert stats.diff_id == Digest.of_bytes(raw) and stats.uncompressed_size == len(raw)
    with pytest.raises(DigestMismatchError):
        extract_layer(io.BytesIO(compress(raw)), tmp_path, expect_diff_id=Digest.of_bytes(b"other"))


def test_garbage_and_truncated_layers_are_format_errors(tmp_path):
    with pytest.raises(LayerFormatError):
        extract_layer(io.BytesIO(b"this is not a tar archive at all" * 40), tmp_path)
    raw = tar_bytes([entry("big", "file", b"z" * 100_000)])
    with pytest.raises(LayerFormatError):
        extract_layer(io.BytesIO(raw[:20_000]), tmp_path)
    assert extract_layer(io.BytesIO(b""), tmp_path).entries == 0


@root_only
def test_read_only_directories_work_without_privileges(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, 65534, 65534)
    layer = tar_bytes([entry("ro", "dir", mode=0o555), entry("ro/sub", "dir", mode=0o500),
                       entry("ro/sub/f", "file", b"x"), entry("dev0", "chr", dev=(1, 3))])

    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)  # pytest's base temp dir is private to root

    def unprivileged():
        stats = extract_layer(io.BytesIO(layer), f"/proc/self/fd/{rootfd}")
        assert stats.skipped == 1, "device nodes are skipped without root"

    try:
        assert as_nobody(unprivileged) == 0
    finally:
        os.close(rootfd)
    assert stat.S_IMODE(os.lstat(root / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(root / "ro/sub").st_mode) == 0o500
    assert (root / "ro/sub/f").read_bytes() == b"x"
    assert os.lstat(root / "ro/sub/f").st_uid == 65534


def test_blob_digest_limits_and_corrupt_compression(tmp_path):
    raw = tar_bytes([entry("a", "file", b"data" * 1000)])
    blob = gzip.compress(raw)
    (tmp_path / "r1").mkdir()
    stats = extract_layer(io.BytesIO(blob), tmp_path / "r1", expect_digest=Digest.of_bytes(blob))
    assert (stats.digest, stats.size) == (Digest.of_bytes(blob), len(blob))
    (tmp_path / "r2").mkdir()
    with pytest.raises(DigestMismatchError, match="blob digest"):
        extract_layer(io.BytesIO(blob), tmp_path / "r2", expect_digest=Digest.of_bytes(b"x"))
    with pytest.raises(ImageFormatError, match="beyond the allowed"):
        extract_layer(io.BytesIO(blob), tmp_path / "r2", max_uncompressed=2048)
    bad_zstd = zstandard.ZstdCompressor().compress(raw)[:-30] + b"\x00" * 30
    with pytest.raises(LayerFormatError):
        extract_layer(io.BytesIO(bad_zstd), tmp_path / "r2")
    with pytest.raises(LayerFormatError):
        extract_layer(io.BytesIO(blob[:len(blob) // 2]), tmp_path / "r2")


def test_plain_archives_keep_whiteout_names(tmp_path):
    apply(tmp_path, entry("old", "file", b"o"))
    apply(tmp_path, entry(".wh.old", "file", b"not a whiteout"), entry("d/.wh..wh..opq", "file"), whiteouts=False)
    assert (tmp_path / "old").exists() and (tmp_path / ".wh.old").read_bytes() == b"not a whiteout"
    assert (tmp_path / "d/.wh..wh..opq").exists()


def test_cached_parents_follow_replacements_and_self_links_keep_files(tmp_path):
    apply(tmp_path, entry("real", "dir"), entry("lnk", "symlink", link="real"), entry("lnk/a", "file", b"a"),
          entry("lnk", "dir"), entry("lnk/b", "file", b"b"), entry("f", "file", b"keep"), entry("f", "hardlink", link="f"))
    assert sorted(os.listdir(tmp_path / "real")) == ["a"]
    assert (tmp_path / "lnk").is_dir() and not (tmp_path / "lnk").is_symlink()
    assert os.listdir(tmp_path / "lnk") == ["b"]
    assert (tmp_path / "f").read_bytes() == b"keep"
