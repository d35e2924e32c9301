"""OCI image layouts: write, read, round trips through skopeo and umoci."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.image.descriptor import Digest, Platform
from pybuildless.image.layout import LayoutError, layout_tags, read_layout, write_index_to_layout, write_layout
from pybuildless.image.model import FileLayer, image_config, image_digest
from pybuildless.image.validate import validate_image
from tests.fixtures.images import make_image


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)


def test_reads_the_fixture_layout(busybox_layout: Path) -> None:
    image = read_layout(busybox_layout, "latest")
    index = json.loads((busybox_layout / "index.json").read_text())
    assert str(image_digest(image)) == index["manifests"][0]["digest"]
    [layer] = image.layers()
    assert isinstance(layer, FileLayer)
    assert str(layer.diff_id) == image_config(image)["rootfs"]["diff_ids"][0]
    assert layer.path.parent == busybox_layout / "blobs" / "sha256"
    validate_image(image, decompress=True)
    # the only manifest is found without a name, and by digest
    assert image_digest(read_layout(busybox_layout)) == image_digest(image)
    assert image_digest(read_layout(busybox_layout, str(image_digest(image)))) == image_digest(image)


def test_write_then_skopeo_and_umoci_read_it(busybox_layout: Path, tmp_path: Path) -> None:
    image = read_layout(busybox_layout, "latest")
    out = tmp_path / "out"
    desc = write_layout(out, image, tag="v1")
    assert desc.digest == image_digest(image)
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    inspect = run("skopeo", "inspect", "--raw", f"oci:{out}:v1")
    assert inspect.returncode == 0, inspect.stderr
    assert "sha256:" + hashlib.sha256(inspect.stdout.encode()).hexdigest() == str(desc.digest)
    bundle = tmp_path / "bundle"
    unpack = run("umoci", "unpack", "--image", f"{out}:v1", str(bundle))
    assert unpack.returncode == 0, unpack.stderr
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "/bin/busybox"


def test_adding_keeps_other_entries_and_moves_a_rewritten_tag(tmp_path: Path) -> None:
    one = make_image(tmp_path / "l", [{"a": b"1"}])
    two = make_image(tmp_path / "l", [{"a": b"2"}, {"b": b"3"}])
    out = tmp_path / "layout"
    write_layout(out, one, tag="one")
    write_layout(out, two, tag="two")
    tags = layout_tags(out)
    assert {t: d.digest for t, d in tags.items()} == {"one": image_digest(one), "two": image_digest(two)}
    write_layout(out, two, tag="one")  # re-tag: 'one' now names image two
    tags = layout_tags(out)
    assert tags["one"].digest == image_digest(two) and tags["two"].digest == image_digest(two)
    assert len(json.loads((out / "index.json").read_text())["manifests"]) == 2
    assert image_digest(read_layout(out, "one")) == image_digest(two)
    # skopeo agrees about both tags
    for tag in ("one", "two"):
        assert run("skopeo", "inspect", f"oci:{out}:{tag}").returncode == 0
    with pytest.raises(LayoutError, match="holds 2 manifests"):
        read_layout(out)
    with pytest.raises(LayoutError, match="no image tagged 'three'"):
        read_layout(out, "three")


def test_concurrent_writers_keep_every_tag(tmp_path: Path) -> None:
    # A build stores cache entries from two threads, and builds may share --cache-repo oci:DIR:
    # each writer must add to the index the others wrote, not to the one it read before them.
    import threading
    from multiprocessing import get_context

    images = [make_image(tmp_path / f"l{i}", [{"f": str(i).encode()}]) for i in range(12)]
    out = tmp_path / "layout"
    start = threading.Barrier(6)

    def put(batch):
        start.wait()
        for i in batch:
            write_layout(out, images[i], tag=f"t{i}")

    threads = [threading.Thread(target=put, args=(range(k, 12, 6),)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(layout_tags(out)) == sorted(f"t{i}" for i in range(12))
    # and from other processes, each with its own open of the layout
    more = [make_image(tmp_path / f"m{i}", [{"g": str(i).encode()}]) for i in range(4)]
    with get_context("fork").Pool(4) as pool:
        pool.starmap(_write_tagged, [(str(out), image, f"p{i}") for i, image in enumerate(more)])
    assert sorted(layout_tags(out)) == sorted([f"t{i}" for i in range(12)] + [f"p{i}" for i in range(4)])
    assert run("skopeo", "inspect", f"oci:{out}:p3").returncode == 0


def _write_tagged(out: str, image, tag: str) -> None:
    write_layout(Path(out), image, tag=tag)


def test_corrupt_blob_is_detected(tmp_path: Path) -> None:
    image = make_image(tmp_path / "l", [{"a": b"hello"}])
    out = tmp_path / "layout"
    write_layout(out, image, tag="t")
    layer = image.layers()[0]
    blob = out / "blobs" / "sha256" / layer.digest.hex
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match=layer.digest.hex):
        read_layout(out, "t")
    # the config is always verified, even when layers are not
    config_blob = out / "blobs" / "sha256" / Digest.of_bytes(image.raw_config()).hex
    config_blob.write_bytes(image.raw_config().replace(b"amd64", b"AMD64").replace(b"arm64", b"ARM64"))
    with pytest.raises(DigestMismatchError):
        read_layout(out, "t", verify_layers=False)


def test_symlinked_blob_is_refused(tmp_path: Path) -> None:
    image = make_image(tmp_path / "l", [{"a": b"x"}])
    out = tmp_path / "layout"
    write_layout(out, image, tag="t")
    blob = out / "blobs" / "sha256" / image.layers()[0].digest.hex
    real = tmp_path / "elsewhere"
    real.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(real)
    with pytest.raises(LayoutError, match="symlink"):
        read_layout(out, "t")


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="oci-layout"):
        read_layout(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ImageFormatError, match="index.json"):
        read_layout(tmp_path)


def test_index_follows_platform(tmp_path: Path) -> None:
    amd = make_image(tmp_path / "l", [{"arch": b"amd64"}], arch="linux/amd64")
    arm = make_image(tmp_path / "l", [{"arch": b"arm64"}], arch="linux/arm64")
    out = tmp_path / "layout"
    write_index_to_layout(out, [amd, arm], tag="multi")
    got = read_layout(out, "multi", platform=Platform.parse("linux/arm64"))
    assert image_digest(got) == image_digest(arm)
    got = read_layout(out, "multi", platform=Platform.parse("linux/amd64"))
    assert image_digest(got) == image_digest(amd)
    with pytest.raises(ImageFormatError, match="linux/amd64, linux/arm64"):
        read_layout(out, "multi", platform=Platform.parse("linux/s390x"))
    inspect = run("skopeo", "--override-arch", "arm64", "inspect", f"oci:{out}:multi")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Architecture"] == "arm64"


@pytest.mark.slow
def test_registry_to_layout_round_trip(busybox_image: str, tmp_path: Path) -> None:
    """skopeo pulls into a layout, we read it and write a new layout, skopeo pushes ours back."""
    first = tmp_path / "from-registry"
    r = run("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{busybox_image}", f"oci:{first}:x")
    assert r.returncode == 0, r.stderr
    image = read_layout(first, "x")
    second = tmp_path / "ours"
    write_layout(second, image, tag="y")
    again = read_layout(second, "y")
    assert image_digest(again) == image_digest(image)
    assert again.raw_config() == image.raw_config()
    validate_image(again, decompress=True)


def test_replace_index_keeps_only_the_new_image(tmp_path: Path) -> None:
    one = make_image(tmp_path / "l", [{"a": b"1"}])
    two = make_image(tmp_path / "l", [{"a": b"2"}])
    out = tmp_path / "layout"
    write_layout(out, one, tag="one")
    write_layout(out, two, replace_index=True)
    index = json.loads((out / "index.json").read_text())
    assert [e["digest"] for e in index["manifests"]] == [str(image_digest(two))]
    assert "annotations" not in index["manifests"][0]
    assert index["manifests"][0]["platform"]["os"] == "linux"
    assert image_digest(read_layout(out)) == image_digest(two)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.dictionaries(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?", fullmatch=True), st.binary(max_size=64), min_size=1, max_size=4),
        min_size=0,
        max_size=3,
    ),
    compression=st.sampled_from(["gzip", "zstd", "none"]),
)
def test_layout_and_tarball_round_trips_keep_identity(tmp_path_factory, files, compression) -> None:
    from pybuildless.image.tarball import read_tarball, write_tarball

    d = tmp_path_factory.mktemp("prop")
    image = make_image(d / "l", files, compression=compression)
    write_layout(d / "layout", image, tag="t")
    from_layout = read_layout(d / "layout", "t")
    assert from_layout.raw_manifest() == image.raw_manifest()
    write_tarball(d / "img.tar", from_layout, ["prop/img:t"])
    from_tar = read_tarball(d / "img.tar", "prop/img:t")
    assert from_tar.raw_manifest() == image.raw_manifest() and from_tar.raw_config() == image.raw_config()
    validate_image(from_tar, decompress=True)


def test_nested_index_without_media_types(tmp_path: Path) -> None:
    """index.json -> index (descriptor says nothing about its type) -> platform manifests."""
    amd = make_image(tmp_path / "l", [{"n": b"amd"}], arch="linux/amd64")
    arm = make_image(tmp_path / "l", [{"n": b"arm"}], arch="linux/arm/v7")
    out = tmp_path / "layout"
    desc = write_index_to_layout(out, [amd, arm], tag="inner")
    index = json.loads((out / "index.json").read_text())
    index["manifests"][0].pop("mediaType")
    (out / "index.json").write_text(json.dumps(index))
    got = read_layout(out, "inner", platform=Platform.parse("linux/arm"))
    assert image_digest(got) == image_digest(arm)
    assert image_digest(read_layout(out, str(desc.digest), platform=Platform.parse("linux/amd64"))) == image_digest(amd)
