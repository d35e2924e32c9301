"""Read-only Image and Layer views (after go-containerregistry's v1.Image/v1.Layer).

Raw bytes are the truth: digests are computed over ``raw_manifest()`` and
``raw_config()`` exactly as stored or pushed, never over a re-serialisation.
Sources (registry, OCI layout, tarball, a build) provide these views; sinks
(push, layout, tarball) consume them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Sequence, runtime_checkable

from pybuildless.errors import ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest


@runtime_checkable
class Layer(Protocol):
    @property
    def digest(self) -> Digest: ...  # of the compressed blob
    @property
    def diff_id(self) -> Digest: ...  # of the uncompressed tar
    @property
    def size(self) -> int: ...  # of the compressed blob
    @property
    def media_type(self) -> str: ...
    def open_compressed(self) -> BinaryIO:
        """The blob as stored; readers that fetch remotely verify size and digest at EOF."""
        ...


@runtime_checkable
class MountableLayer(Layer, Protocol):
    """A layer known to exist in a registry repository, so a push can mount it."""

    @property
    def source(self) -> Any: ...  # a pybuildless.name.Reference


@runtime_checkable
class Image(Protocol):
    def raw_manifest(self) -> bytes: ...
    def raw_config(self) -> bytes: ...
    def layers(self) -> Sequence[Layer]: ...


def layer_descriptor(layer: Layer) -> Descriptor:
    return Descriptor(layer.media_type, layer.digest, layer.size)


def image_digest(image: Image) -> Digest:
    return Digest.of_bytes(image.raw_manifest())


def image_manifest(image: Image) -> dict[str, Any]:
    return json.loads(image.raw_manifest())


def image_config(image: Image) -> dict[str, Any]:
    return json.loads(image.raw_config())


def image_media_type(image: Image) -> str:
    m = image_manifest(image)
    return m.get("mediaType") or mt.OCI_MANIFEST


@dataclass(frozen=True)
class FileLayer:
    """A compressed layer blob in a local file, with its digests already known."""

    path: Path
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str = mt.OCI_LAYER_GZIP

    def open_compressed(self) -> BinaryIO:
        return open(self.path, "rb")


class ManifestImage:
    """An image given by its raw manifest and config bytes and its layer objects.

    The layers must appear in the manifest in the same order; that is checked
    so a source cannot hand out a view that disagrees with its own manifest.
    """

    def __init__(self, raw_manifest: bytes, raw_config: bytes, layers: Sequence[Layer]) -> None:
        self._raw_manifest = raw_manifest
        self._raw_config = raw_config
        self._layers = list(layers)
        manifest = json.loads(raw_manifest)
        listed = [d.get("digest") for d in manifest.get("layers", [])]
        if listed != [str(layer.digest) for layer in self._layers]:
            raise ImageFormatError("manifest layers do not match the image's layer objects")
        want = manifest.get("config", {}).get("digest")
        if want != str(Digest.of_bytes(raw_config)):
            raise ImageFormatError(f"config digest mismatch: manifest says {want}")

    def raw_manifest(self) -> bytes:
        return self._raw_manifest

    def raw_config(self) -> bytes:
        return self._raw_config

    def layers(self) -> Sequence[Layer]:
        return list(self._layers)

    @cached_property
    def digest(self) -> Digest:
        return Digest.of_bytes(self._raw_manifest)


def canonical_json(value: Any) -> bytes:
    """The serialisation used for everything we generate: stable key order, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build_image(
    config: dict[str, Any],
    layers: Sequence[Layer],
    *,
    docker: bool = False,
    annotations: dict[str, str] | None = None,
) -> ManifestImage:
    """Serialise a config and a manifest for ``layers``.

    ``config['rootfs']['diff_ids']`` is set from the layers. ``docker=True``
    gives Docker schema 2 media types (only valid when every layer is gzip or
    plain: ``mediatypes.fits_docker_manifest``); otherwise OCI.
    """
    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in layers]}
    descriptors = [layer_descriptor(layer).to_dict() for layer in layers]
    if docker:
        descriptors = [{**d, "mediaType": mt.docker_layer_type(d["mediaType"])} for d in descriptors]
    media_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
    return image_from_raw_config(canonical_json(config), layers, media_type=media_type, layer_descriptors=descriptors,
                                 annotations=annotations)


def image_from_raw_config(
    raw_config: bytes,
    layers: Sequence[Layer],
    *,
    media_type: str = mt.OCI_MANIFEST,
    config_media_type: str | None = None,
    layer_descriptors: Sequence[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    extra_fields: dict[str, Any] | None = None,
) -> ManifestImage:
    """Serialise a manifest around config bytes kept exactly as given.

    Unlike ``build_image`` the config is not re-serialised, so its digest (the
    image ID) survives. ``layer_descriptors`` (dicts) keep fields such as
    ``urls`` or ``annotations`` of existing layers; they must name the same
    digests as ``layers``. ``extra_fields`` are further top-level manifest keys
    (``subject``, ``artifactType``, ...).
    """
    if config_media_type is None:
        config_media_type = mt.DOCKER_CONFIG if media_type == mt.DOCKER_MANIFEST else mt.OCI_CONFIG
    if layer_descriptors is None:
        descriptors = [layer_descriptor(layer).to_dict() for layer in layers]
    else:
        descriptors = [dict(d) for d in layer_descriptors]
    manifest: dict[str, Any] = dict(extra_fields or {})
    manifest.update(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": config_media_type,
                "digest": str(Digest.of_bytes(raw_config)),
                "size": len(raw_config),
            },
            "layers": descriptors,
        }
    )
    if annotations:
        manifest["annotations"] = dict(annotations)
    return ManifestImage(canonical_json(manifest), raw_config, layers)
