"""Choosing a manifest from an index for a platform."""

from __future__ import annotations

import pytest

from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Platform
from pybuildless.image.platform import NoMatchingPlatformError, is_attestation, normalise, select_manifest

HEX = "0123456789abcdef" * 4


def entry(n: int, platform: dict | None, media_type: str = mt.OCI_MANIFEST, annotations: dict | None = None) -> dict:
    e = {"mediaType": media_type, "digest": f"sha256:{HEX[:-2]}{n:02d}", "size": 100 + n}
    if platform is not None:
        e["platform"] = platform
    if annotations:
        e["annotations"] = annotations
    return e


def pick(index_entries: list[dict], want: str) -> int:
    desc = select_manifest({"schemaVersion": 2, "manifests": index_entries}, Platform.parse(want))
    return int(str(desc.digest)[-2:])


def test_exact_os_and_architecture() -> None:
    entries = [entry(1, {"os": "linux", "architecture": "amd64"}), entry(2, {"os": "linux", "architecture": "arm64", "variant": "v8"})]
    assert pick(entries, "linux/amd64") == 1
    assert pick(entries, "linux/arm64") == 2  # v8 is arm64's baseline
    assert pick(entries, "linux/aarch64") == 2
    assert pick(entries, "x86_64") == 1


def test_attestations_are_skipped() -> None:
    attestation = entry(
        1,
        {"os": "unknown", "architecture": "unknown"},
        annotations={"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": "sha256:" + HEX},
    )
    assert is_attestation(attestation)
    entries = [attestation, entry(2, {"os": "linux", "architecture": "amd64"})]
    assert pick(entries, "linux/amd64") == 2
    with pytest.raises(NoMatchingPlatformError) as err:
        pick([attestation], "linux/amd64")
    assert "unknown" not in str(err.value)


def test_variants() -> None:
    entries = [
        entry(1, {"os": "linux", "architecture": "arm", "variant": "v6"}),
        entry(2, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        entry(3, {"os": "linux", "architecture": "arm64"}),
    ]
    assert pick(entries, "linux/arm/v7") == 2
    assert pick(entries, "linux/arm") == 2  # bare arm means v7
    assert pick(entries, "linux/arm/v6") == 1
    assert pick(entries[:1], "linux/arm/v7") == 1  # v7 runs v6 images
    with pytest.raises(NoMatchingPlatformError):
        pick(entries[1:2], "linux/arm/v6")  # but not the reverse
    amd = [entry(4, {"os": "linux", "architecture": "amd64", "variant": "v3"}), entry(5, {"os": "linux", "architecture": "amd64"})]
    assert pick(amd, "linux/amd64") == 5  # an entry without variant beats a specific one
    assert pick(amd, "linux/amd64/v3") == 4
    assert normalise(Platform("linux", "amd64", "v1")) == Platform("linux", "amd64")


def test_first_match_wins_and_no_platform_fallback() -> None:
    entries = [entry(1, {"os": "linux", "architecture": "amd64"}), entry(2, {"os": "linux", "architecture": "amd64"})]
    assert pick(entries, "linux/amd64") == 1
    assert pick([entry(7, None)], "linux/s390x") == 7  # layouts often omit platforms
    nested = entry(8, {"os": "linux", "architecture": "amd64"}, media_type=mt.OCI_INDEX)
    assert select_manifest({"manifests": [nested]}, Platform.parse("linux/amd64")).media_type == mt.OCI_INDEX


def test_error_lists_available_platforms() -> None:
    entries = [
        entry(1, {"os": "linux", "architecture": "amd64"}),
        entry(2, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        entry(3, {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"}),
    ]
    with pytest.raises(NoMatchingPlatformError, match=r"linux/ppc64le .*available: linux/amd64, linux/arm/v7, windows/amd64"):
        pick(entries, "linux/ppc64le")
    with pytest.raises(NoMatchingPlatformError, match="available: none"):
        pick([], "linux/amd64")
