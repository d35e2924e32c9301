"""docker-save tarballs: the combined kind we write, and reading both kinds back."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Digest
from pybuildless.image.layout import read_layout
from pybuildless.image.model import FileLayer, build_image, image_config, image_digest
from pybuildless.image.tarball import TarballError, TarMemberLayer, read_tarball, split_repo_tag, write_tarball
from pybuildless.image.validate import validate_image
from tests.fixtures.images import make_image


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def busybox(busybox_layout: Path):
    return read_layout(busybox_layout, "latest")


@pytest.fixture(scope="module")
def busybox_tar(busybox, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tarball") / "image.tar"
    write_tarball(path, busybox, ["127.0.0.1:5000/team/app:v1", "plain"])
    return path


def test_archive_layout(busybox_tar: Path, busybox) -> None:
    with tarfile.open(busybox_tar) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        repositories = json.load(tar.extractfile("repositories"))
        index = json.load(tar.extractfile("index.json"))
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    config_hex = Digest.of_bytes(busybox.raw_config()).hex
    assert manifest == [
        {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": ["127.0.0.1:5000/team/app:v1", "plain:latest"],
            "Layers": [f"blobs/sha256/{busybox.layers()[0].digest.hex}"],
        }
    ]
    assert repositories == {"127.0.0.1:5000/team/app": {"v1": config_hex}, "plain": {"latest": config_hex}}
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]] == ["v1", "latest"]
    assert all(e["digest"] == str(image_digest(busybox)) for e in index["manifests"])
    assert names.index("index.json") > names.index(f"blobs/sha256/{config_hex}")  # blobs first


def test_skopeo_reads_it_as_docker_archive(busybox_tar: Path, busybox, tmp_path: Path) -> None:
    inspect = run("skopeo", "inspect", f"docker-archive:{busybox_tar}:127.0.0.1:5000/team/app:v1")
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)
    assert info["Layers"] == image_config(busybox)["rootfs"]["diff_ids"]
    out = tmp_path / "copied"
    copy = run("skopeo", "copy", "--quiet", f"docker-archive:{busybox_tar}:plain:latest", f"oci:{out}:t")
    assert copy.returncode == 0, copy.stderr
    copied = read_layout(out, "t")
    assert image_config(copied)["rootfs"] == image_config(busybox)["rootfs"]
    assert image_config(copied)["config"]["Cmd"] == ["sh"]


def test_it_is_also_an_oci_layout(busybox_tar: Path, busybox, tmp_path: Path) -> None:
    extracted = tmp_path / "x"
    extracted.mkdir()
    with tarfile.open(busybox_tar) as tar:
        tar.extractall(extracted, filter="data")  # our own archive, in a temp dir
    assert image_digest(read_layout(extracted, "v1")) == image_digest(busybox)
    raw = run("skopeo", "inspect", "--raw", f"oci:{extracted}:v1")
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == str(image_digest(busybox))
    unpack = run("umoci", "unpack", "--image", f"{extracted}:v1", str(tmp_path / "bundle"))
    assert unpack.returncode == 0, unpack.stderr
    assert (tmp_path / "bundle" / "rootfs" / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size


def test_read_back_our_kind_keeps_the_manifest(busybox_tar: Path, busybox) -> None:
    image = read_tarball(busybox_tar, "127.0.0.1:5000/team/app:v1")
    assert image.raw_manifest() == busybox.raw_manifest()
    assert image.raw_config() == busybox.raw_config()
    assert isinstance(image.layers()[0], TarMemberLayer)
    validate_image(image, decompress=True)
    assert image_digest(read_tarball(busybox_tar, "plain")) == image_digest(busybox)
    with pytest.raises(TarballError, match="holds|no image tagged"):
        read_tarball(busybox_tar, "missing:tag")


def test_read_old_docker_save_kind(busybox_layout: Path, busybox, tmp_path: Path) -> None:
    """skopeo writes the pre-25 layout: <hex>.tar uncompressed layers, <id>/layer.tar symlinks."""
    old = tmp_path / "old.tar"
    r = run("skopeo", "copy", "--quiet", f"oci:{busybox_layout}:latest", f"docker-archive:{old}:old/one:v2")
    assert r.returncode == 0, r.stderr
    image = read_tarball(old)
    [layer] = image.layers()
    assert layer.media_type == mt.OCI_LAYER
    # an uncompressed layer's digest is its diff_id, computed from the bytes
    assert layer.digest == layer.diff_id == busybox.layers()[0].diff_id
    validate_image(image, decompress=True)
    assert image_digest(read_tarball(old, "old/one:v2")) == image_digest(image)


def test_read_handmade_legacy_layer_tar(tmp_path: Path) -> None:
    """<id>/layer.tar entries, one of them a symlink to another, as docker save wrote for years."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as t:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    data = layer_tar.getvalue()
    diff = "sha256:" + hashlib.sha256(data).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff, diff]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    path = tmp_path / "legacy.tar"
    with tarfile.open(path, "w") as t:
        for name, content in (("aaa/layer.tar", data), (config_name, config)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("bbb/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../aaa/layer.tar"
        t.addfile(link)
        manifest = json.dumps([{"Config": config_name, "RepoTags": ["legacy:1"], "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        t.addfile(info, io.BytesIO(manifest))
    image = read_tarball(path, "legacy:1")
    assert [str(layer.digest) for layer in image.layers()] == [diff, diff]
    assert image.raw_config() == config
    validate_image(image, decompress=True)
    with image.layers()[1].open_compressed() as f:
        assert f.read() == data


def test_bad_tarballs(tmp_path: Path) -> None:
    not_tar = tmp_path / "junk.tar"
    not_tar.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(TarballError, match="junk.tar"):
        read_tarball(not_tar)
    gz = tmp_path / "img.tar.gz"
    gz.write_bytes(gzip.compress(b"x" * 1024))
    with pytest.raises(TarballError, match="compressed"):
        read_tarball(gz)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as t:
        info = tarfile.TarInfo("hello")
        t.addfile(info, io.BytesIO(b""))
    with pytest.raises(TarballError, match="manifest.json"):
        read_tarball(empty)
    with pytest.raises(ImageFormatError, match="not digests"):
        split_repo_tag("repo@sha256:" + "a" * 64)
    assert split_repo_tag("localhost:5000/x") == ("localhost:5000/x", "latest")


def test_write_refuses_a_layer_that_lies(tmp_path: Path) -> None:
    image = make_image(tmp_path / "l", [{"a": b"1"}])
    layer = image.layers()[0]
    layer.path.write_bytes(b"\x1f\x8b" + b"\0" * (layer.size - 2))  # same size, other bytes
    with pytest.raises(DigestMismatchError):
        write_tarball(tmp_path / "out.tar", image, ["x:y"])
    assert not (tmp_path / "out.tar").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tar")]


def test_layers_are_streamed_not_loaded(tmp_path: Path) -> None:
    blob = tmp_path / "big.layer"
    with open(blob, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    layer = FileLayer(blob, Digest("sha256", sha), Digest("sha256", "0" * 64), blob.stat().st_size, mt.OCI_LAYER_GZIP)
    image = build_image({"architecture": "amd64", "os": "linux"}, [layer])
    tracemalloc.start()
    try:
        write_tarball(tmp_path / "big.tar", image, ["big:1"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak Python allocation {peak} bytes for a 24 MiB layer"
    back = read_tarball(tmp_path / "big.tar")
    assert back.layers()[0].digest == layer.digest


def test_several_images_in_one_archive(tmp_path: Path) -> None:
    from pybuildless.image.tarball import write_tarball_multi

    shared = {"shared": b"same layer in both"}
    one = make_image(tmp_path / "l", [shared, {"one": b"1"}])
    two = make_image(tmp_path / "l", [shared, {"two": b"2"}])
    path = tmp_path / "multi.tar"
    write_tarball_multi(path, [(one, ["multi/one:1"]), (two, ["multi/two:2", "multi/two:latest"])])
    with tarfile.open(path) as tar:
        blob_names = [n for n in tar.getnames() if n.startswith("blobs/sha256/")]
    assert len(blob_names) == len(set(blob_names)) == 3 + 2 + 2  # layers stored once, 2 configs, 2 manifests
    assert image_digest(read_tarball(path, "multi/one:1")) == image_digest(one)
    assert image_digest(read_tarball(path, "multi/two")) == image_digest(two)  # ':latest' implied
    with pytest.raises(TarballError, match="holds 2 images"):
        read_tarball(path)
    for ref, want in (("multi/one:1", one), ("multi/two:2", two)):
        r = run("skopeo", "inspect", "--config", f"docker-archive:{path}:{ref}")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rootfs"] == image_config(want)["rootfs"]


@pytest.mark.slow
@pytest.mark.root
def test_tarball_through_an_authenticated_registry_runs(busybox_tar: Path, registry_basic, tmp_path: Path) -> None:
    """Our archive, pushed by skopeo to a basic-auth registry, pulled back and run under chroot."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (umoci unpack and chroot)")
    ref = registry_basic.ref("tarball/busybox:v1")
    push = run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", registry_basic.creds,
               f"docker-archive:{busybox_tar}:plain:latest", f"docker://{ref}")
    assert push.returncode == 0, push.stderr
    layout = tmp_path / "pulled"
    pull = run("skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", registry_basic.creds,
               f"docker://{ref}", f"oci:{layout}:v1")
    assert pull.returncode == 0, pull.stderr
    unpack = run("umoci", "unpack", "--image", f"{layout}:v1", str(tmp_path / "bundle"))
    assert unpack.returncode == 0, unpack.stderr
    out = run("chroot", str(tmp_path / "bundle" / "rootfs"), "/bin/sh", "-c", "echo from-tarball; ls /home")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["from-tarball", "user"]
