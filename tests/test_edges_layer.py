"""Layer tars at their edges (found by mutation testing of fs/layer.py).

The rules, from independent sources:
- OCI image-spec layer.md (image-spec 13cff54902ec): "Implementations SHOULD generate layers such
  that the whiteout files appear before sibling directory entries"; a whiteout is a regular file.
- Kaniko pkg/util/tar_util.go (kaniko 236ba5690) Whiteout: the header sets only Name and Size 0
  (mode 0, owner 0:0, no names, mtime 0); moby go-archive changes.go ExportChanges (moby b985e2313a86)
  likewise sets no mode.
- moby go-archive changes.go collectChanges/addChanges: the parent directories of a changed path
  are part of the change set, up to the root.
"""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from pybuildless.errors import BuildError
from pybuildless.fs.compress import open_decompressed
from pybuildless.fs.layer import _add_path, _read_exactly, layer_entries, write_layer
from pybuildless.fs.tarwriter import TarStream
from pybuildless.fs.snapshot import Changes


def members(layer):
    with open(layer.path, "rb") as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as t:
        return [m for m in t]


def test_whiteouts_come_before_siblings_that_sort_before_the_prefix():
    # "-" (0x2d) and "+" (0x2b) sort before "." (0x2e): only the whiteout rule puts .wh.* first
    changes = Changes(added=("d/-dash", "+plus"), deleted=("d/zz", "zz"))
    assert layer_entries(changes) == [
        ("whiteout", ".wh.zz"), ("path", "+plus"), ("path", "d"), ("whiteout", "d/.wh.zz"), ("path", "d/-dash"),
    ]


def test_every_ancestor_of_a_changed_path_is_an_entry():
    assert layer_entries(Changes(added=("a/b/c/d",))) == [
        ("path", "a"), ("path", "a/b"), ("path", "a/b/c"), ("path", "a/b/c/d")]
    assert layer_entries(Changes(deleted=("x/y/z",))) == [
        ("path", "x"), ("path", "x/y"), ("whiteout", "x/y/.wh.z")]


def test_whiteout_and_opaque_headers_are_kaniko_s(tmp_path):
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    changes = Changes(deleted=("gone",), opaque=("d",))
    entries = {m.name: m for m in members(write_layer(root, changes, tmp_path / "out", compression="none"))}
    for name in (".wh.gone", "d/.wh..wh..opq"):
        m = entries[name]
        assert m.isreg() and m.size == 0
        assert (m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, 0, "", "", 0)


def test_a_file_is_read_for_exactly_its_recorded_size(tmp_path):
    (tmp_path / "f").write_bytes(b"abcdefgh-grown")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert b"".join(_read_exactly(fd, 8, "f")) == b"abcdefgh", "never past the size in the header"
        assert list(_read_exactly(fd, 0, "f")) == []
    finally:
        os.close(fd)
    big = (1 << 20) * 2 + 5  # read in pieces of 1 MiB
    (tmp_path / "big").write_bytes(bytes(range(256)) * (big // 256 + 1))
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        assert [len(p) for p in _read_exactly(fd, big, "big")] == [1 << 20, 1 << 20, 5]
    finally:
        os.close(fd)


def test_a_file_that_shrank_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        pieces = _read_exactly(fd, 8, "etc/f")
        assert next(pieces) == b"abc"
        with pytest.raises(BuildError, match=r"^/etc/f changed size while its layer was being written$"):
            next(pieces)
    finally:
        os.close(fd)


def test_layer_files_are_never_opened_through_a_final_symlink(tmp_path):
    (tmp_path / "target").write_text("t")
    os.symlink("target", tmp_path / "link")
    regular = os.stat(tmp_path / "target")  # what lstat said before "link" was swapped for a symlink
    dirfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            _add_path(TarStream(io.BytesIO()), dirfd, "link", "link", regular, None, {})
    finally:
        os.close(dirfd)
    assert info.value.errno == 40  # ELOOP


def test_zstd_with_docker_media_types_is_refused_naming_the_flag(tmp_path):
    from pybuildless.errors import UsageError
    with pytest.raises(UsageError, match=r"^--compression=zstd needs an OCI image; the base image uses Docker "
                                         r"media types$"):
        write_layer(tmp_path, Changes(added=()), tmp_path / "o", compression="zstd", docker=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")
def test_devices_and_fifos_are_headers_and_sockets_are_left_out(tmp_path, caplog, monkeypatch):
    """Kaniko pkg/util/tar_util.go (236ba5690) AddFileToTar: "Ignoring socket ..., not adding to tar";
    every other kind goes in through tar.FileInfoHeader (device numbers in devmajor/devminor)."""
    import logging
    import socket
    import stat as st
    caplog.set_level(logging.DEBUG, logger="pybuildless.fs.layer")
    root = tmp_path / "r"
    root.mkdir()
    os.mknod(root / "null", 0o666 | st.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "loop", 0o660 | st.S_IFBLK, os.makedev(7, 2))
    os.mkfifo(root / "fifo", 0o600)
    sock = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(root)
    sock.bind("a-sock")  # relative: a socket path has room for 107 bytes only
    try:
        changes = Changes(added=("a-sock", "fifo", "loop", "null"))  # the socket first
        entries = {m.name: m for m in members(write_layer(root, changes, tmp_path / "out", compression="none"))}
    finally:
        sock.close()
    assert sorted(entries) == ["fifo", "loop", "null"]
    assert entries["null"].ischr() and (entries["null"].devmajor, entries["null"].devminor) == (1, 3)
    assert entries["loop"].isblk() and (entries["loop"].devmajor, entries["loop"].devminor) == (7, 2)
    assert entries["fifo"].isfifo() and entries["fifo"].mode == 0o600
    assert "skipping socket /a-sock" in caplog.messages


def test_owner_recorded_by_a_rootless_extraction_goes_into_the_header_not_the_xattrs(tmp_path):
    """fs/owners.py: the user.pybuildless.owner record stands for the owner a single-id user
    namespace could not apply; the layer carries it as uid/gid and never as an xattr."""
    root = tmp_path / "r"
    root.mkdir()
    for name, record in (("recorded", b"1234:5678"), ("garbled", b"12x:5")):
        (root / name).write_text(name)
        os.setxattr(root / name, "user.pybuildless.owner", record)
        os.setxattr(root / name, "user.z", b"after")  # sorts after the record: still written
    me = (os.geteuid(), os.getegid())
    changes = Changes(added=("garbled", "recorded"))
    entries = {m.name: m for m in members(write_layer(root, changes, tmp_path / "out", compression="none"))}
    assert (entries["recorded"].uid, entries["recorded"].gid) == (1234, 5678)
    assert (entries["garbled"].uid, entries["garbled"].gid) == me, "an unreadable record changes nothing"
    for m in entries.values():
        assert [k for k in m.pax_headers if k.startswith("SCHILY.xattr.")] == ["SCHILY.xattr.user.z"]
        assert m.pax_headers["SCHILY.xattr.user.z"] == "after"


def test_two_hardlink_groups_stay_apart(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    for group in ("a", "b"):
        (root / f"{group}1").write_text(group)
        os.link(root / f"{group}1", root / f"{group}2")
    changes = Changes(added=("a1", "a2", "b1", "b2"))
    entries = {m.name: m for m in members(write_layer(root, changes, tmp_path / "out", compression="none"))}
    assert entries["a1"].isreg() and entries["b1"].isreg()
    assert (entries["a2"].islnk(), entries["a2"].linkname) == (True, "a1")
    assert (entries["b2"].islnk(), entries["b2"].linkname) == (True, "b1")


def test_layers_go_into_a_new_or_existing_out_dir_and_temp_files_stay_in_it(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))  # must not be used
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_text("x")
    out = tmp_path / "a/b/out"  # parents created
    first = write_layer(root, Changes(added=("f",)), out)
    (root / "g").write_text("y")
    second = write_layer(root, Changes(added=("g",)), out)  # the directory exists now
    assert sorted(p.name for p in out.iterdir()) == sorted([first.path.name, second.path.name])


def test_the_compression_level_reaches_the_compressor(tmp_path):
    import random
    root = tmp_path / "r"
    root.mkdir()
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghij", k=6)) for _ in range(64)]
    (root / "text").write_bytes(b" ".join(rng.choices(words, k=200_000)))
    changes = Changes(added=("text",))
    fast = write_layer(root, changes, tmp_path / "fast", level=1)
    best = write_layer(root, changes, tmp_path / "best", level=9)
    default = write_layer(root, changes, tmp_path / "default")
    assert fast.diff_id == best.diff_id == default.diff_id, "the same tar"
    assert best.size < fast.size
    assert fast.digest != default.digest


def test_a_path_that_vanished_since_the_snapshot_is_left_out_and_logged(tmp_path, caplog):
    import logging
    caplog.set_level(logging.DEBUG, logger="pybuildless.fs.layer")
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d/kept").write_text("k")
    changes = Changes(added=("d", "d/gone", "d/kept"))
    names = [m.name for m in members(write_layer(root, changes, tmp_path / "out", compression="none"))]
    assert names == ["d", "d/kept"]
    assert "/d/gone vanished before its layer was written" in caplog.messages
