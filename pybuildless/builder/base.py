"""Where a stage's base comes from: scratch, an earlier stage, a local OCI layout, or a registry."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pybuildless.builder.imageconfig import scratch_config
from pybuildless.errors import BuildError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Digest, Platform
from pybuildless.image.model import FileLayer, Image, Layer
from pybuildless.image.platform import NoMatchingPlatformError, serves
from pybuildless.name import Reference, parse_reference
from pybuildless.registry.options import RegistryOptions

log = logging.getLogger(__name__)

LAYOUT_PREFIXES = ("oci:", "oci-layout://")


@dataclass(frozen=True)
class SourcedLayer:
    """A pulled layer on local disk that also remembers its registry repository,
    so a push to the same registry can mount it instead of uploading it."""

    path: Path
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str
    source: Reference

    def open_compressed(self) -> BinaryIO:
        return open(self.path, "rb")


@dataclass
class BaseImage:
    """The image a stage starts from: its config, its layers and where its cache key chain starts."""

    config: dict[str, Any]
    layers: list[Layer]
    description: str
    docker_media_types: bool = False
    key: str | None = None  # where the cache key chain starts: the image's manifest digest


def is_layout_reference(name: str) -> bool:
    return name.startswith(LAYOUT_PREFIXES)


def _split_layout(name: str) -> tuple[Path, str | None]:
    rest = name.removeprefix("oci-layout://").removeprefix("oci:")
    path, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        return Path(rest), None
    return Path(path), tag


def from_image(image: Image, description: str) -> BaseImage:
    manifest = json.loads(image.raw_manifest())
    docker = mt.is_docker(manifest.get("mediaType", ""))
    key = str(Digest.of_bytes(image.raw_manifest()))
    return BaseImage(json.loads(image.raw_config()), list(image.layers()), description, docker, key)


def _check_platform(base: BaseImage, name: str, platform: Platform) -> BaseImage:
    """A single-platform image for another platform is refused, never relabelled: its RUN
    steps would run (or fail) as the wrong architecture and the result would lie about it."""
    config = base.config
    if not config.get("architecture"):
        return base  # an image that does not say what it is for: nothing to check
    have = Platform.from_dict(config)
    if not serves(platform, have):
        raise BuildError(f"base image {name} has no image for platform {platform} (it has: {have})")
    return base


def load_base(
    name: str,
    *,
    platform: Platform,
    registry: RegistryOptions,
    blob_dir: Path,
    cache_dir: Path | None = None,
    lazy: bool = False,
    record_dir: Path | None = None,
    push_ahead: bool = False,
) -> BaseImage:
    """Resolve FROM's image for ``platform`` (already expanded; stage names are handled by the
    caller): the platform's entry of an index, or a single image made for that platform.

    ``push_ahead``: its layers will be in the pushed image (the final stage's base), so they
    are made to exist in the destinations now, while the build runs (``registry.ahead``).
    """
    if name == "scratch":
        return _load_base(name, platform=platform, registry=registry, blob_dir=blob_dir)
    try:
        base = _load_base(name, platform=platform, registry=registry, blob_dir=blob_dir,
                          cache_dir=cache_dir, lazy=lazy, record_dir=record_dir)
    except NoMatchingPlatformError as e:
        offered = ", ".join(e.offered) or "none"
        raise BuildError(f"base image {name} has no image for platform {platform} (it has: {offered})") from None
    base = _check_platform(base, name, platform)
    if push_ahead:
        load_base_ahead(base, registry)
    return base


def load_base_ahead(base: BaseImage, registry: RegistryOptions) -> None:
    """Start making ``base``'s layers exist in the running build's destinations."""
    if not base.layers:
        return
    from pybuildless.registry import ahead

    started = ahead.current(registry)
    if started is not None:
        started.start_layers(base.layers)


def _load_base(
    name: str,
    *,
    platform: Platform,
    registry: RegistryOptions,
    blob_dir: Path,
    cache_dir: Path | None = None,
    lazy: bool = False,
    record_dir: Path | None = None,
) -> BaseImage:
    """Resolve FROM's image (already expanded; stage names are handled by the caller).

    ``record_dir`` (the layer store's root): manifests and configs are kept there by digest
    and the layers stay in the registry until the store needs one, so a base already stored
    costs one HEAD request (none by digest), and a push to its registry mounts its layers.
    """
    if name == "scratch":
        return BaseImage(scratch_config(platform), [], "scratch", key=f"scratch:{platform}")
    if is_layout_reference(name):
        from pybuildless.image.layout import read_layout

        path, tag = _split_layout(name)
        if not path.is_dir():
            raise BuildError(f"FROM {name}: no OCI layout at {path}")
        return from_image(read_layout(path, tag, platform=platform), name)
    from pybuildless.registry.remote import pull_image

    ref = parse_reference(name)
    if cache_dir is not None:
        from pybuildless.cache.baseimages import lookup

        cached = lookup(cache_dir, name, platform=platform, options=registry)
        if cached is not None:
            return from_image(cached, str(ref))
    if record_dir is not None:
        from pybuildless.registry.remote import fetch_image
        from pybuildless.store.manifests import ManifestRecord

        return from_image(fetch_image(ref, platform=platform, options=registry,
                                      documents=ManifestRecord(record_dir)), str(ref))
    if lazy:
        # With the layer cache a stage may never need its base's files: blobs are then
        # streamed from the registry only if and when the root is laid down.
        from pybuildless.registry.remote import fetch_image

        return from_image(fetch_image(ref, platform=platform, options=registry), str(ref))
    image = pull_image(ref, blob_dir, platform=platform, options=registry)
    base = from_image(image, str(ref))
    base.layers = [_sourced(layer, ref) for layer in base.layers]
    return base


def _sourced(layer: Layer, ref: Reference) -> Layer:
    if isinstance(layer, FileLayer):
        return SourcedLayer(layer.path, layer.digest, layer.diff_id, layer.size, layer.media_type, ref)
    return layer
