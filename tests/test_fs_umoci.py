"""Cross-check with umoci: the same layers unpack to the same tree with umoci and with us."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pybuildless.fs.extract import extract_layer
from pybuildless.fs.layer import write_layer, write_root_layer
from pybuildless.fs.snapshot import Snapshotter
from pybuildless.image.descriptor import Digest
from tests.fs_hostile import entry, fingerprint, tar_bytes

pytestmark = [
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="umoci unpack with owners needs root"),
]


def _blob(layout: Path, data: bytes) -> dict:
    d = Digest.of_bytes(data)
    (layout / "blobs/sha256" / d.hex).write_bytes(data)
    return {"digest": str(d), "size": len(data)}


def write_layout(layout: Path, layers: list[tuple[bytes, str, str]]) -> None:
    """A one-image OCI layout, tag 'latest', built with json only. layers: (blob, media type, diff_id)."""
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [diff_id for _, _, diff_id in layers]}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(layout, json.dumps(config).encode())},
        "layers": [{"mediaType": mt, **_blob(layout, blob)} for blob, mt, _ in layers],
    }
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    (layout / "index.json").write_text(json.dumps(index))


def umoci_rootfs(tmp_path: Path, layers: list[tuple[bytes, str, str]]) -> Path:
    layout = tmp_path / "layout"
    write_layout(layout, layers)
    rootfs = tmp_path / "umoci-rootfs"
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:latest", str(rootfs)],
                   check=True, capture_output=True, timeout=120)
    return rootfs


def our_rootfs(tmp_path: Path, layers: list[tuple[bytes, str, str]]) -> Path:
    root = tmp_path / "our-rootfs"
    root.mkdir()
    for blob, _, diff_id in layers:
        extract_layer(io.BytesIO(blob), root, expect_diff_id=Digest.parse(diff_id))
    return root


def _ours_vs_umoci(tmp_path, layers, dir_mtimes=False):
    ours = fingerprint(our_rootfs(tmp_path, layers), dir_mtimes=dir_mtimes)
    theirs = fingerprint(umoci_rootfs(tmp_path, layers), dir_mtimes=dir_mtimes)
    assert ours == theirs
    return ours


def test_layers_we_write_unpack_identically_with_umoci(tmp_path):
    src = tmp_path / "src"
    (src / "etc/conf.d").mkdir(parents=True)
    (src / "etc/conf.d/a").write_text("a")
    (src / "etc/conf.d/b").write_text("b")
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/su").write_bytes(b"\x7fELF fake")
    os.chmod(src / "usr/bin/su", 0o4755)
    os.link(src / "usr/bin/su", src / "usr/bin/su-hard")
    os.symlink("../usr/bin/su", src / "etc/su-link")
    (src / "srv").mkdir()
    os.chown(src / "srv", 33, 33)
    (src / "cache/old").mkdir(parents=True)
    (src / "cache/old/blob").write_text("old")
    out = tmp_path / "out"
    layers = [write_root_layer(src, out)]
    snap = Snapshotter(src)
    snap.baseline()
    # step 1: delete a tree and a file, modify, add a hardlink and a fifo
    shutil.rmtree(src / "etc/conf.d")
    (src / "usr/bin/su").write_bytes(b"\x7fELF patched")
    (src / "srv/new").write_text("new")
    os.mkfifo(src / "srv/pipe")
    os.setxattr(src / "srv/new", "user.origin", b"step1")
    layers.append(write_layer(src, snap.take(), out))  # umoci 0.4 has no zstd
    # step 2: recreate a directory (opaque), replace a dir by a file, a symlink by a dir
    os.rename(src / "cache", tmp_path / "cache-moved")
    (src / "cache").mkdir()
    (src / "cache/fresh").write_text("fresh")
    shutil.rmtree(src / "srv")
    (src / "srv").write_text("now a file")
    os.unlink(src / "etc/su-link")
    (src / "etc/su-link").mkdir()
    changes = snap.take()
    assert changes.opaque == ("cache",)
    layers.append(write_layer(src, changes, out, compression="none"))
    blobs = [(layer.path.read_bytes(), layer.media_type, str(layer.diff_id)) for layer in layers]
    tree = _ours_vs_umoci(tmp_path, blobs)
    assert tree == fingerprint(src, dir_mtimes=False)
    assert "cache/old" not in tree and "etc/conf.d" not in tree and "cache/fresh" in tree


@pytest.mark.parametrize("marker_last", [False, True])
def test_handmade_whiteouts_and_opaque_dirs_match_umoci(tmp_path, marker_last):
    l1 = tar_bytes([
        entry("a", "dir"), entry("a/old", "file", b"o"), entry("a/sub", "dir"), entry("a/sub/deep", "file", b"d"),
        entry("b", "dir"), entry("b/keep", "file", b"k"), entry("b/gone", "file", b"g"),
        entry("c", "dir"), entry("c/tree", "dir"), entry("c/tree/x", "file", b"x"),
        entry("link", "symlink", link="/a"), entry("f", "file", b"f", mode=0o2755, uid=7, gid=9),
    ])
    body = [entry("a", "dir", mode=0o750), entry("a/new", "file", b"n"), entry("a/sub", "dir"),
            entry("a/sub/upper", "file", b"u")]
    marker = [entry("a/.wh..wh..opq", "file")]
    l2 = tar_bytes((body + marker) if marker_last else (marker + body) + [
        entry("b/.wh.gone", "file"), entry("c/.wh.tree", "file"), entry(".wh.link", "file"),
    ])
    l3 = tar_bytes([entry("b/.wh.keep", "file"), entry("b/keep2", "file", b"k2"), entry("f", "dir")])
    layers = []
    for raw, compress, mt in ((l1, gzip.compress, "application/vnd.oci.image.layer.v1.tar+gzip"),
                              (l2, lambda b: b, "application/vnd.oci.image.layer.v1.tar"),
                              (l3, gzip.compress, "application/vnd.oci.image.layer.v1.tar+gzip")):
        layers.append((compress(raw), mt, str(Digest.of_bytes(raw))))
    # umoci 0.4.7 leaves some layer directories with the unpack time as mtime; compare
    # directory times against the layers instead
    tree = _ours_vs_umoci(tmp_path, layers)
    assert sorted(p for p in tree if p.startswith("a/")) == ["a/new", "a/sub", "a/sub/upper"]
    ours = fingerprint(tmp_path / "our-rootfs")
    for d in ("a", "a/sub", "b", "c"):
        assert ours[d][4] == 1_600_000_000, f"{d}: a directory keeps the time its layers gave it"
