from __future__ import annotations

import hashlib
import os
import tarfile

import pytest

from pybuildless.fs.compress import open_decompressed
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.layer import layer_entries, write_layer, write_root_layer
from pybuildless.fs.snapshot import Changes, Snapshotter
from pybuildless.image import mediatypes as mt
from pybuildless.image.model import FileLayer

LONG = "deep/" + "n" * 120 + "/" + "f" * 150


def build(root, when=1_650_000_000):
    files = {"b/file": b"bee", "a/x": b"ex", "a.b": b"dot", LONG: b"long", "caps": b"cap"}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    os.link(root / "a/x", root / "b/hard")
    os.symlink("/a/x", root / "link")
    os.setxattr(root / "caps", "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16)
    os.chown(root / "b/file", 1234, 5678)
    for d, ds, fs in os.walk(root, topdown=False):
        for n in ds + fs:
            os.utime(os.path.join(d, n), (when + 0.75, when + 0.75), follow_symlinks=False)


def members(layer: FileLayer):
    with open(layer.path, "rb") as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as t:
        return [(m, t.extractfile(m).read() if m.isreg() else None) for m in t]


def test_layer_is_deterministic_and_hashes_match(tmp_path):
    layers = []
    for i in range(2):
        root = tmp_path / f"r{i}"
        root.mkdir()
        build(root)
        layers.append(write_root_layer(root, tmp_path / f"out{i}"))
    a, b = layers
    assert isinstance(a, FileLayer) and a.media_type == mt.OCI_LAYER_GZIP
    assert (a.digest, a.diff_id, a.size) == (b.digest, b.diff_id, b.size)
    blob = a.path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == a.digest.hex and len(blob) == a.size
    with open(a.path, "rb") as f:
        assert hashlib.sha256(open_decompressed(f).read()).hexdigest() == a.diff_id.hex
    assert [p.name for p in (tmp_path / "out0").iterdir()] == [a.path.name], "no temp files left behind"


def test_entry_format(tmp_path):
    (tmp_path / "r").mkdir()
    build(tmp_path / "r")
    layer = write_root_layer(tmp_path / "r", tmp_path / "out", compression="none")
    entries = members(layer)
    names = [m.name for m, _ in entries]
    assert names == sorted(names, key=lambda n: n.rstrip("/").split("/")), "sorted, parents first"
    by_name = {m.name.rstrip("/"): (m, data) for m, data in entries}
    assert LONG in by_name and by_name[LONG][1] == b"long"
    for m, _ in entries:
        assert m.uname == "" and m.gname == "" and m.mtime == 1_650_000_000
        assert not any(k in m.pax_headers for k in ("mtime", "atime", "ctime", "uname", "gname"))
    raw = layer.path.read_bytes()
    assert by_name["a"][0].isdir()
    assert any(raw[o:o + 3] == b"a/\0" for o in range(0, len(raw), 512)), "directories end with '/'"
    assert (by_name["b/file"][0].uid, by_name["b/file"][0].gid) == (1234, 5678)
    first, second = sorted(["a/x", "b/hard"])
    assert by_name[first][0].isreg() and by_name[second][0].islnk() and by_name[second][0].linkname == first
    assert by_name["link"][0].issym() and by_name["link"][0].linkname == "/a/x"
    cap = by_name["caps"][0].pax_headers["SCHILY.xattr.security.capability"]
    assert cap.encode("utf-8", "surrogateescape") == b"\x01\x00\x00\x02" + b"\x00" * 16


def test_clamp_mtime_and_compression_choices(tmp_path):
    (tmp_path / "r").mkdir()
    build(tmp_path / "r")
    for compression, media_type in (("zstd", mt.OCI_LAYER_ZSTD), ("none", mt.OCI_LAYER)):
        layer = write_root_layer(tmp_path / "r", tmp_path / compression, compression=compression,
                                 clamp_mtime=1_000_000_000)
        assert layer.media_type == media_type
        assert {m.mtime for m, _ in members(layer)} == {1_000_000_000}
    assert (write_root_layer(tmp_path / "r", tmp_path / "late", clamp_mtime=2_000_000_000).diff_id
            == write_root_layer(tmp_path / "r", tmp_path / "none2").diff_id), "later epoch leaves times alone"


def test_whiteouts_opaque_and_parents(tmp_path):
    root = tmp_path / "r"
    (root / "etc/d").mkdir(parents=True)
    (root / "etc/d/x").write_text("x")
    (root / "opq").mkdir()
    changes = Changes(added=("etc/d/x",), deleted=("etc/gone", "etc/zz", "top"), opaque=("opq",))
    order = [(k, r) for k, r in layer_entries(changes)]
    assert order == [("whiteout", ".wh.top"), ("path", "etc"), ("whiteout", "etc/.wh.gone"),
                     ("whiteout", "etc/.wh.zz"), ("path", "etc/d"), ("path", "etc/d/x"),
                     ("path", "opq"), ("opaque", "opq/.wh..wh..opq")]
    entries = members(write_layer(root, changes, tmp_path / "out", compression="none"))
    wh = {m.name: m for m, _ in entries if ".wh." in m.name}
    assert set(wh) == {".wh.top", "etc/.wh.gone", "etc/.wh.zz", "opq/.wh..wh..opq"}
    assert all(m.isreg() and m.size == 0 and m.mtime == 0 and m.uid == 0 for m in wh.values())


def test_empty_diff_is_detected(tmp_path):
    (tmp_path / "r").mkdir()
    build(tmp_path / "r")
    snap = Snapshotter(tmp_path / "r")
    snap.baseline()
    assert snap.take().empty and Changes().empty
    assert not Changes(deleted=("x",)).empty


def test_root_layer_respects_ignore_list(tmp_path):
    root = tmp_path / "r"
    (root / "kaniko").mkdir(parents=True)
    (root / "kaniko/secret").write_text("token")
    (root / "app").write_text("app")
    names = [m.name for m, _ in members(write_root_layer(root, tmp_path / "o", ignore=IgnoreList.of(["/kaniko"]),
                                                         compression="none"))]
    assert names == ["app"]


def test_unknown_compression_is_rejected_before_writing(tmp_path):
    from pybuildless.errors import UsageError
    with pytest.raises(UsageError):
        write_layer(tmp_path, Changes(added=()), tmp_path / "o", compression="lz4")
    assert list((tmp_path / "o").iterdir()) == []


def test_writer_never_reads_through_a_symlinked_parent(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    root = tmp_path / "r"
    root.mkdir()
    (root / "d").mkdir()
    (root / "d/secret").write_text("inside")
    changes = Changes(added=("d", "d/secret"))
    os.rename(root / "d", tmp_path / "d-moved")
    os.symlink(str(outside), root / "d")  # the tree changed after the snapshot
    entries = members(write_layer(root, changes, tmp_path / "out", compression="none"))
    assert [(m.name, m.type) for m, _ in entries] == [("d", tarfile.SYMTYPE)]
    assert all(data != b"host secret" for _, data in entries)


def test_docker_media_types(tmp_path):
    from pybuildless.errors import UsageError
    (tmp_path / "r").mkdir()
    (tmp_path / "r/f").write_text("x")
    changes = Changes(added=("f",))
    assert write_layer(tmp_path / "r", changes, tmp_path / "o", docker=True).media_type == mt.DOCKER_LAYER_GZIP
    oci = write_layer(tmp_path / "r", changes, tmp_path / "o2")
    docker = write_layer(tmp_path / "r", changes, tmp_path / "o3", docker=True)
    assert (oci.digest, oci.media_type) == (docker.digest, mt.OCI_LAYER_GZIP), "same bytes, other label"
    with pytest.raises(UsageError, match="zstd"):
        write_layer(tmp_path / "r", changes, tmp_path / "o4", compression="zstd", docker=True)


def test_non_utf8_and_long_names_survive_a_round_trip(tmp_path):
    from pybuildless.fs.extract import extract_layer
    src = tmp_path / "src"
    src.mkdir()
    odd = os.fsdecode(b"caf\xe9-latin1")
    (src / odd).write_text("bytes name")
    deep = src / ("d" * 100) / ("e" * 200)
    deep.mkdir(parents=True)
    (deep / ("f" * 250)).write_text("long")
    layer = write_root_layer(src, tmp_path / "out")
    dst = tmp_path / "dst"
    dst.mkdir()
    with open(layer.path, "rb") as f:
        extract_layer(f, dst)
    assert (dst / odd).read_text() == "bytes name"
    assert os.fsencode(odd) in os.listdir(os.fsencode(dst))
    assert (dst / ("d" * 100) / ("e" * 200) / ("f" * 250)).read_text() == "long"
