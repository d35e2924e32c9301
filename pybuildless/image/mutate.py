"""Pure functions from an image to a new image (after go-containerregistry's mutate).

Configs are edited as raw dicts so keys we do not know survive. Existing layer
descriptors are carried over verbatim (``urls``, ``annotations``), and so are
the manifest's media type, annotations and other top-level fields; the config
and manifest are re-serialised with ``canonical_json``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any, Callable, Mapping, Sequence

from pybuildless.errors import ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.model import (
    Image,
    Layer,
    ManifestImage,
    canonical_json,
    image_config,
    image_from_raw_config,
    image_manifest,
    layer_descriptor,
)
from pybuildless.image.times import rfc3339

ConfigEdit = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def _rebuild(image: Image, config: dict[str, Any], layers: Sequence[Layer], descriptors: list[dict[str, Any]]) -> ManifestImage:
    manifest = image_manifest(image)
    media_type = manifest.get("mediaType") or mt.OCI_MANIFEST
    fits_docker = all(mt.fits_docker_manifest(d.get("mediaType", "")) for d in descriptors)
    if media_type == mt.DOCKER_MANIFEST and not fits_docker:
        # Docker's schema 2 has no zstd; switch the whole manifest to OCI types.
        media_type = mt.OCI_MANIFEST
        descriptors = [{**d, "mediaType": mt.oci_layer_type(d.get("mediaType", ""))} for d in descriptors]
    config_media_type = (manifest.get("config") or {}).get("mediaType")
    if media_type == mt.OCI_MANIFEST and config_media_type == mt.DOCKER_CONFIG:
        config_media_type = mt.OCI_CONFIG
    extra = {k: v for k, v in manifest.items() if k not in ("schemaVersion", "mediaType", "config", "layers", "annotations")}
    return image_from_raw_config(
        canonical_json(config),
        layers,
        media_type=media_type,
        config_media_type=config_media_type,
        layer_descriptors=descriptors,
        annotations=manifest.get("annotations"),
        extra_fields=extra,
    )


def _existing_descriptors(image: Image) -> list[dict[str, Any]]:
    return [dict(d) for d in image_manifest(image).get("layers") or []]


def append_layers(
    image: Image,
    layers: Sequence[Layer],
    history_entries: Sequence[Mapping[str, Any]] | None = None,
) -> ManifestImage:
    """``image`` plus ``layers`` on top, with ``history_entries`` appended to the config's history.

    ``history_entries`` may include ``empty_layer`` entries (ENV, LABEL, ...);
    the others must be exactly one per layer. Without entries, one plain entry
    per layer is added (dated like the config) so the count invariant holds.
    Docker manifests get Docker layer types for plain and gzip layers; a zstd layer makes
    the result an OCI manifest.
    """
    config = copy.deepcopy(image_config(image))
    if history_entries is None:
        stamp = {"created": config["created"]} if config.get("created") else {}
        history_entries = [dict(stamp) for _ in layers]
    entries = [dict(h) for h in history_entries]
    non_empty = sum(1 for h in entries if not h.get("empty_layer"))
    if non_empty != len(layers):
        raise ImageFormatError(f"append_layers: {len(layers)} layers but {non_empty} non-empty history entries")
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["type"] = "layers"
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [str(layer.diff_id) for layer in layers]
    if entries:
        config["history"] = list(config.get("history") or []) + entries
    docker = (image_manifest(image).get("mediaType") or mt.OCI_MANIFEST) == mt.DOCKER_MANIFEST
    new_descriptors = []
    for layer in layers:
        d = layer_descriptor(layer).to_dict()
        if docker:
            d["mediaType"] = mt.docker_layer_type(d["mediaType"])
        new_descriptors.append(d)
    return _rebuild(image, config, list(image.layers()) + list(layers), _existing_descriptors(image) + new_descriptors)


def with_config(image: Image, edit: ConfigEdit | Mapping[str, Any]) -> ManifestImage:
    """A new image whose config is edited by ``edit``.

    A mapping is merged into the top level of the config (``{"config": {...}}``
    replaces the whole runtime section). A function gets a deep copy and
    returns the new config (or edits it in place and returns None). The layers
    and ``rootfs`` must not change here: that is ``append_layers``' job.
    """
    config = copy.deepcopy(image_config(image))
    if callable(edit):
        result = edit(config)
        new = config if result is None else result
    else:
        new = {**config, **copy.deepcopy(dict(edit))}
    if not isinstance(new, dict):
        raise ImageFormatError("with_config: the edit did not produce a JSON object")
    if new.get("rootfs") != config.get("rootfs") and new.get("rootfs") != image_config(image).get("rootfs"):
        raise ImageFormatError("with_config: rootfs must not change; use append_layers")
    json.dumps(new)  # fail here, not at push time, on values JSON cannot hold
    return _rebuild(image, new, list(image.layers()), _existing_descriptors(image))


def set_created(image: Image, when: dt.datetime, *, history: bool = False) -> ManifestImage:
    """Set the config's ``created`` (and, with ``history=True``, every history entry's)."""
    stamp = rfc3339(when.replace(microsecond=0))  # whole seconds, as BuildKit writes ``created``

    def edit(config: dict[str, Any]) -> None:
        config["created"] = stamp
        if history:
            for entry in config.get("history") or []:
                if isinstance(entry, dict):
                    entry["created"] = stamp

    return with_config(image, edit)
