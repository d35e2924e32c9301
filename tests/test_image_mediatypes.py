"""One rule for Docker's layer media types and one for ``created`` timestamps, wherever an image is written.

Expected media types: Docker image manifest v2 schema 2 and the OCI image spec's compatibility notes
(Docker spells the plain and gzip layer types its own way and has no zstd type; go-containerregistry's
``pkg/v1/types``: ``DockerLayer``, ``DockerUncompressedLayer``). Expected timestamps: RFC 3339 as Go's
``time.RFC3339`` prints a whole-second UTC time (what BuildKit writes for ``SOURCE_DATE_EPOCH``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pybuildless.fs.changes import Changes
from pybuildless.fs.layer import write_layer
from pybuildless.image import mediatypes as mt
from pybuildless.image.model import build_image, image_manifest
from pybuildless.image.times import rfc3339
from tests.fixtures.images import make_layer

DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_PLAIN = "application/vnd.docker.image.rootfs.diff.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_PLAIN = "application/vnd.oci.image.layer.v1.tar"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.mark.parametrize("oci,docker", [(OCI_GZIP, DOCKER_GZIP), (OCI_PLAIN, DOCKER_PLAIN)])
def test_docker_spelling_of_layer_types_both_ways(oci: str, docker: str) -> None:
    assert mt.docker_layer_type(oci) == docker and mt.oci_layer_type(docker) == oci
    assert mt.docker_layer_type(docker) == docker and mt.oci_layer_type(oci) == oci


def test_zstd_has_no_docker_spelling() -> None:
    assert mt.docker_layer_type(OCI_ZSTD) == OCI_ZSTD
    assert not mt.fits_docker_manifest(OCI_ZSTD)
    assert all(mt.fits_docker_manifest(t) for t in (OCI_GZIP, OCI_PLAIN, DOCKER_GZIP, DOCKER_PLAIN))


def test_is_docker() -> None:
    assert mt.is_docker("application/vnd.docker.distribution.manifest.v2+json")
    assert mt.is_docker("application/vnd.docker.distribution.manifest.list.v2+json")
    assert not mt.is_docker("application/vnd.oci.image.manifest.v1+json")
    assert not mt.is_docker("")


@pytest.mark.parametrize("compression,docker_type", [("gzip", DOCKER_GZIP), ("none", DOCKER_PLAIN)])
def test_every_writer_gives_a_docker_manifest_the_same_layer_types(
        tmp_path: Path, compression: str, docker_type: str) -> None:
    """A layer written for a Docker image and a new image agree on the layer type."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "f").write_bytes(b"x")
    written = write_layer(tmp_path / "root", Changes(added=("f",)), tmp_path / "out", compression=compression,
                          docker=True)
    assert written.media_type == docker_type
    oci_layer = make_layer(tmp_path / "l", {"g": b"y"}, compression=compression)
    built = build_image({"architecture": "amd64", "os": "linux"}, [oci_layer], docker=True)
    assert [d["mediaType"] for d in image_manifest(built)["layers"]] == [docker_type]


@pytest.mark.parametrize("when,text", [
    (0, "1970-01-01T00:00:00Z"),
    (1609459200, "2021-01-01T00:00:00Z"),
    (dt.datetime(2021, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2021-01-01T00:00:00Z"),
    (dt.datetime(2021, 1, 1), "2021-01-01T00:00:00Z"),  # naive: UTC
])
def test_rfc3339_whole_seconds(when, text: str) -> None:
    assert rfc3339(when) == text


def test_rfc3339_keeps_a_fraction_and_reads_back() -> None:
    text = rfc3339(1609459200.25)
    assert text.startswith("2021-01-01T00:00:00.25") and text.endswith("Z")
    assert dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() == 1609459200.25
    now = dt.datetime.fromisoformat(rfc3339().replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - now).total_seconds()) < 5
