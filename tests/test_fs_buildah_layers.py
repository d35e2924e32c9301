"""Cross-check with another builder's layers: an image buildah builds (deletions, a deleted tree, a directory
removed and made again, a hard link, a symlink, a setuid and a chown'd file), pushed to the session registry
and copied to an OCI layout with skopeo, extracts to the same tree with ``extract_layer`` and with
``umoci raw unpack``.

buildah writes deletions differently per storage driver, so both are built: ``vfs`` diffs two trees and
whites out each child of a recreated directory, ``overlay`` reads the upper dir and writes an opaque marker
(``.wh..wh..opq``); its whiteout entries may even carry a stray link name (the upper dir's whiteouts can
share one inode, and the tar writer's hard-link detection leaves the name on the converted entry).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuildless.fs.extract import extract_layer
from pybuildless.image.descriptor import Digest
from tests.differential import Buildah
from tests.fs_hostile import fingerprint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah chroot builds and umoci unpack with owners need root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("buildah", "skopeo", "umoci")),
                       reason="needs buildah, skopeo and umoci"),
]

DOCKERFILE = """\
ARG BASE
FROM $BASE
RUN mkdir -p /data/keep /data/drop/deep /cache/a/b /opt/tool \\
    && echo k > /data/keep/k && echo x > /data/drop/deep/x && echo t > /data/top \\
    && echo 1 > /cache/a/b/one && echo 2 > /cache/two \\
    && printf payload > /opt/tool/suid && chmod 4755 /opt/tool/suid && ln /opt/tool/suid /opt/tool/suid-hard \\
    && echo owned > /opt/tool/owned && chown 1000:1000 /opt/tool/owned && chmod 0640 /opt/tool/owned \\
    && ln -s ../data/keep/k /opt/tool/klink
RUN rm /bin/vi /etc/group /data/top && rm -rf /data/drop /home/user \\
    && rm -rf /cache && mkdir -p /cache/a && echo fresh > /cache/a/fresh
RUN rm -rf /data/keep && mkdir -p /data/keep/sub && echo k2 > /data/keep/sub/k2 && chmod 0700 /data/keep
"""

# Paths the later steps delete: from the base image (/bin/vi a symlink, /etc/group a file, /home/user a
# directory) and from the first step.
DELETED = ("bin/vi", "etc/group", "home/user", "data/top", "data/drop", "cache/two", "cache/a/b", "data/keep/k")

# The whiteout entries buildah 1.28 writes, per layer after the first RUN, per storage driver (observed).
WHITEOUTS = {
    "vfs": [
        {"bin/.wh.vi", "etc/.wh.group", "data/.wh.top", "data/.wh.drop", "home/.wh.user",
         "cache/.wh.two", "cache/a/.wh.b"},
        {"data/keep/.wh.k"},
    ],
    "overlay": [
        {"bin/.wh.vi", "etc/.wh.group", "data/.wh.top", "data/.wh.drop", "home/.wh.user",
         "cache/.wh..wh..opq"},
        {"data/keep/.wh..wh..opq"},
    ],
}


@dataclass(frozen=True)
class OverlayBuildah(Buildah):
    """The shared helper with buildah's ``overlay`` storage driver instead of ``vfs`` (same scratch home)."""

    @classmethod
    def create(cls, home: Path, registry_host: str) -> "OverlayBuildah":
        made = super().create(home, registry_host)
        conf = home / "storage.conf"
        conf.write_text(conf.read_text().replace('driver = "vfs"', 'driver = "overlay"'))
        return made

    def _global_flags(self) -> list[str]:
        flags = super()._global_flags()
        flags[flags.index("--storage-driver") + 1] = "overlay"
        return flags


def overlay_mount_error(scratch: Path) -> str | None:
    """Why an overlay cannot be mounted here, or None. Tried for real, in a private mount namespace:
    ``overlay`` is a module the kernel loads on first use, so /proc/filesystems may not list it yet."""
    dirs = [scratch / n for n in ("lower", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True)
    options = f"lowerdir={dirs[0]},upperdir={dirs[1]},workdir={dirs[2]}"
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay",
                           "overlay", "-o", options, str(dirs[3])], capture_output=True, text=True, timeout=60)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


@dataclass(frozen=True)
class Layer:
    blob: bytes
    digest: str
    diff_id: str

    def names(self) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(self.blob)) as tar:
            return tar.getnames()


def oci_layers(layout: Path) -> list[Layer]:
    """The layers of the only image in ``layout``, with the diff_ids its config lists."""
    def blob(digest: str) -> bytes:
        return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    diff_ids = config["rootfs"]["diff_ids"]
    assert len(diff_ids) == len(manifest["layers"])
    return [Layer(blob(d["digest"]), d["digest"], diff_id) for d, diff_id in zip(manifest["layers"], diff_ids)]


def extract_all(layers: list[Layer], root: Path, *, whiteouts: bool = True) -> dict[str, tuple]:
    root.mkdir()
    for layer in layers:
        extract_layer(io.BytesIO(layer.blob), root, whiteouts=whiteouts,
                      expect_digest=Digest.parse(layer.digest), expect_diff_id=Digest.parse(layer.diff_id))
    # umoci 0.4.7 leaves some directories with the unpack time as mtime (see test_fs_umoci.py)
    return fingerprint(root, dir_mtimes=False)


def deletion_problems(tree: dict[str, tuple]) -> list[str]:
    """What is wrong with ``tree`` as the result of honouring every deletion and recreation."""
    problems = [f"{p} should be deleted" for p in DELETED if p in tree]
    problems += [f"whiteout {p} left as a file" for p in tree if os.path.basename(p).startswith(".wh.")]
    for top, expected in (("cache", ["cache/a", "cache/a/fresh"]),
                          ("data/keep", ["data/keep/sub", "data/keep/sub/k2"])):
        found = sorted(p for p in tree if p.startswith(top + "/"))
        if found != expected:
            problems.append(f"{top} holds {found}, not only the recreated {expected}")
    return problems


@pytest.mark.parametrize("driver", [
    "vfs",
    "overlay",
])
def test_buildah_layers_extract_like_umoci(driver, tmp_path, registry, busybox_image):
    if driver == "overlay" and (error := overlay_mount_error(tmp_path / "probe")):
        pytest.skip(f"overlay cannot be mounted here: {error}")
    helper = OverlayBuildah if driver == "overlay" else Buildah
    buildah = helper.create(tmp_path / "buildah", registry.host)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    ref = registry.ref(f"buildah-layers/{driver}:latest")
    buildah.build_and_push(ctx, ref, {"BASE": busybox_image})
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:latest"],
                   check=True, capture_output=True, timeout=120)
    layers = oci_layers(layout)
    assert len(layers) == 4, "busybox plus one layer per RUN (--layers)"

    # The layers really hold what this test is about, in buildah's own spelling.
    for layer, expected in zip(layers[2:], WHITEOUTS[driver]):
        seen = {n for n in layer.names() if os.path.basename(n).startswith(".wh.")}
        assert seen == expected
    with tarfile.open(fileobj=io.BytesIO(layers[1].blob)) as tar:
        first = {m.name: m for m in tar.getmembers()}
    assert first["opt/tool/suid-hard"].islnk() and first["opt/tool/suid-hard"].linkname == "opt/tool/suid"
    assert first["opt/tool/klink"].issym() and first["opt/tool/owned"].uid == 1000
    assert first["opt/tool/suid"].mode & 0o7777 == 0o4755

    ours = extract_all(layers, tmp_path / "ours")
    rootfs = tmp_path / "umoci-rootfs"
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:latest", str(rootfs)],
                   check=True, capture_output=True, timeout=120)
    theirs = fingerprint(rootfs, dir_mtimes=False)
    differing = {p: (ours.get(p), theirs.get(p)) for p in sorted(set(ours) | set(theirs))
                 if ours.get(p) != theirs.get(p)}
    assert differing == {}, "path: (ours, umoci)"
    # the whole base tree was compared (all of it survives but the deleted paths), not a few dirs
    base = {os.path.normpath(n) for n in layers[0].names()} - {"."}
    assert len(base) > 250
    assert sorted(p for p in base - set(ours) if not any(p == d or p.startswith(d + "/") for d in DELETED)) == []

    assert deletion_problems(ours) == []
    _, perms, owner, body, _, _, *links = ours["opt/tool/suid"]
    assert (perms, owner, body) == (0o4755, (0, 0), hashlib.sha256(b"payload").hexdigest())
    assert links == [("opt/tool/suid", "opt/tool/suid-hard")]
    assert ours["opt/tool/owned"][1:3] == (0o640, (1000, 1000))
    assert ours["opt/tool/klink"][3] == "../data/keep/k"
    assert ours["data/keep"][1] == 0o700 and "bin/busybox" in ours and "etc/passwd" in ours

    # The deletion checks bite: the same layers with whiteouts taken as plain files fail them.
    ignored = deletion_problems(extract_all(layers, tmp_path / "no-whiteouts", whiteouts=False))
    assert "bin/vi should be deleted" in ignored and "etc/group should be deleted" in ignored
    assert any(p.startswith("cache holds") for p in ignored) and any(p.startswith("data/keep holds") for p in ignored)
