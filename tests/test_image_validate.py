"""validate_image catches each kind of inconsistency with a precise message."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.image.descriptor import Digest
from pybuildless.image.model import ManifestImage, canonical_json
from pybuildless.image.validate import validate_image
from tests.fixtures.images import make_image


class RawImage:
    """An Image that hands out whatever it is given, consistent or not."""

    def __init__(self, manifest: bytes, config: bytes, layers) -> None:
        self._m, self._c, self._l = manifest, config, list(layers)

    def raw_manifest(self) -> bytes:
        return self._m

    def raw_config(self) -> bytes:
        return self._c

    def layers(self):
        return list(self._l)


def parts(tmp_path: Path):
    image = make_image(tmp_path, [{"a": b"1"}, {"b": b"2"}])
    return json.loads(image.raw_manifest()), json.loads(image.raw_config()), image.layers()


def rebuild(manifest: dict, config: dict, layers, fix_config_digest: bool = True) -> RawImage:
    raw_config = canonical_json(config)
    if fix_config_digest:
        manifest = {**manifest, "config": {**manifest["config"], "digest": str(Digest.of_bytes(raw_config)), "size": len(raw_config)}}
    return RawImage(canonical_json(manifest), raw_config, layers)


def test_a_good_image_passes(tmp_path: Path) -> None:
    manifest, config, layers = parts(tmp_path)
    validate_image(rebuild(manifest, config, layers), decompress=True)


def test_config_digest_and_size(tmp_path: Path) -> None:
    manifest, config, layers = parts(tmp_path)
    good = rebuild(manifest, config, layers)
    with pytest.raises(DigestMismatchError, match="config does not match"):
        validate_image(RawImage(good.raw_manifest(), good.raw_config().replace(b"linux", b"LINUX"), layers))
    with pytest.raises(DigestMismatchError, match="config is .* bytes"):
        validate_image(RawImage(good.raw_manifest(), good.raw_config() + b" ", layers))


def test_counts_and_diff_ids(tmp_path: Path) -> None:
    manifest, config, layers = parts(tmp_path)
    short = dict(config, rootfs={"type": "layers", "diff_ids": config["rootfs"]["diff_ids"][:1]})
    with pytest.raises(ImageFormatError, match="layer counts differ: manifest 2, image 2, config diff_ids 1"):
        validate_image(rebuild(manifest, short, layers))
    swapped = dict(config, rootfs={"type": "layers", "diff_ids": config["rootfs"]["diff_ids"][::-1]})
    with pytest.raises(ImageFormatError, match="layer 0: config diff_id"):
        validate_image(rebuild(manifest, swapped, layers))
    with pytest.raises(ImageFormatError, match="rootfs.type"):
        validate_image(rebuild(manifest, dict(config, rootfs={"type": "x", "diff_ids": []}), layers))
    with pytest.raises(ImageFormatError, match="history has 1 non-empty entries for 2 layers"):
        validate_image(rebuild(manifest, dict(config, history=[{}, {"empty_layer": True}]), layers))
    with pytest.raises(ImageFormatError, match="no 'architecture'"):
        validate_image(rebuild(manifest, {k: v for k, v in config.items() if k != "architecture"}, layers))


def test_layer_objects_against_manifest_and_bytes(tmp_path: Path) -> None:
    manifest, config, layers = parts(tmp_path)
    with pytest.raises(ImageFormatError, match="layer 0: manifest says"):
        validate_image(rebuild(manifest, config, layers[::-1]))
    bad_size = [replace(layers[0], size=layers[0].size + 1), layers[1]]
    with pytest.raises(ImageFormatError, match="layer 0: manifest size"):
        validate_image(rebuild(manifest, config, bad_size))
    # bytes on disk that no longer match the digest
    data = layers[1].path.read_bytes()
    layers[1].path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(DigestMismatchError, match="layer 1: blob has"):
        validate_image(rebuild(manifest, config, layers))
    validate_image(rebuild(manifest, config, layers), check_blobs=False)


def test_wrong_diff_id_found_only_by_decompressing(tmp_path: Path) -> None:
    manifest, config, layers = parts(tmp_path)
    fake = str(Digest.of_bytes(b"not the layer"))
    lying = [layers[0], replace(layers[1], diff_id=Digest.parse(fake))]
    config = dict(config, rootfs={"type": "layers", "diff_ids": [config["rootfs"]["diff_ids"][0], fake]})
    image = rebuild(manifest, config, lying)
    validate_image(image)  # self-consistent on paper
    with pytest.raises(DigestMismatchError, match="layer 1: uncompressed content has digest"):
        validate_image(image, decompress=True)


def test_ambiguous_or_wrong_documents(tmp_path: Path) -> None:
    manifest, config, layers = parts(tmp_path)
    with pytest.raises(ImageFormatError, match="ambiguous"):
        validate_image(rebuild(dict(manifest, manifests=[]), config, layers))
    with pytest.raises(ImageFormatError, match="schemaVersion"):
        validate_image(rebuild(dict(manifest, schemaVersion=1), config, layers))
    with pytest.raises(ImageFormatError, match="not an image manifest"):
        validate_image(rebuild(dict(manifest, mediaType="application/vnd.oci.image.index.v1+json"), config, layers))
    with pytest.raises(ImageFormatError, match="manifest is not valid JSON"):
        validate_image(RawImage(b"{", b"{}", []))
    assert isinstance(make_image(tmp_path, []), ManifestImage)
    validate_image(make_image(tmp_path, []))  # an image without layers is valid
