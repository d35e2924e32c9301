"""Pushing images: blobs first (skipped when present, mounted across repositories of a
registry, else uploaded), then the manifest, to one or more destinations; indexes over them.

Layer bytes pushed are reported to ``pybuildless.transfer`` (a live display on a terminal).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Sequence

from pybuildless.errors import DigestMismatchError, ImageFormatError, RegistryError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest, Platform
from pybuildless.image.model import Image, Layer, canonical_json
from pybuildless.name import Reference, parse_reference
from pybuildless.registry import ahead
from pybuildless.registry.blobpush import layer_opener, mount_source, push_blob, push_scopes
from pybuildless.registry.client import RegistryClient
from pybuildless.registry.jobs import parallel_map
from pybuildless.registry.options import RegistryOptions

# The records keep the name they had when pushing lived in remote.py: log lines read the same.
logger = logging.getLogger("pybuildless.registry.remote")


def push_image(image: Image, refs: Sequence[Reference | str], *, options: RegistryOptions | None = None,
               jobs: int | None = None) -> Digest:
    """Push ``image`` to every reference; blobs go up once per repository, before any manifest.

    Destinations in the same registry after the first mount the blobs from it. Blob work a
    build started ahead (``registry.ahead``: the permission check's upload sessions, base
    layers mounted while the build ran) is used, not repeated.
    Returns the manifest digest (the same for every destination).
    """
    if not refs:
        raise RegistryError("push: no destination given")
    options = options or RegistryOptions()
    refs = [parse_reference(r) if isinstance(r, str) else r for r in refs]
    raw_manifest = image.raw_manifest()
    manifest = json.loads(raw_manifest)
    media_type = manifest.get("mediaType") or mt.OCI_MANIFEST
    config_raw = image.raw_config()
    config_desc = Descriptor.from_dict(manifest["config"])
    if Digest.of_bytes(config_raw, config_desc.digest.algorithm) != config_desc.digest:
        raise DigestMismatchError("push: the image's config does not match its manifest")
    layers = list(image.layers())
    if media_type == mt.DOCKER_MANIFEST and not all(mt.fits_docker_manifest(layer.media_type) for layer in layers):
        raise ImageFormatError("push: zstd layers cannot go in a Docker v2 manifest; use the OCI format")
    unique = list({layer.digest: layer for layer in layers}.values())
    started = ahead.current(options)
    pushed_repo: dict[str, str] = {}  # registry -> first repository that holds all blobs
    digest = Digest.of_bytes(raw_manifest)
    for ref in refs:
        client = RegistryClient.for_reference(ref, options)
        done_repo = pushed_repo.get(ref.registry)
        sources = {done_repo} if done_repo else set()
        sources |= {s for s in (mount_source(layer, ref) for layer in layers) if s}
        if started is not None:
            sources |= {h for h in (started.blob_home(ref, layer.digest) for layer in unique) if h}
        scopes = push_scopes(ref, sources)
        session = started.take_session(ref) if started is not None else None

        def push_one(blob: Layer | None, ref=ref, client=client, scopes=scopes, done_repo=done_repo) -> str:
            if blob is None:  # the config: in the session the permission check opened, if any
                return push_blob(client, ref.repository, config_desc, lambda: io.BytesIO(config_raw), scopes,
                                 done_repo, known_source=done_repo is not None, session=session)
            early = started.blob_result(ref, blob.digest) if started is not None else None
            if early is not None:
                logger.info("layer %s: %s while the build ran", blob.digest, early)
                return early
            mount_from, known = done_repo, done_repo is not None  # an earlier destination got every blob
            # pushed by this build before (another platform's image, a layer cache entry): no
            # request in that repository, a mount from it into another
            home = started.blob_home(ref, blob.digest) if started is not None else None
            if home is not None and (mount_from is None or home == ref.repository):
                mount_from, known = home, True
            source = mount_source(blob, ref)
            if source is not None and (mount_from is None or source == ref.repository):
                mount_from, known = source, True
            desc = Descriptor(blob.media_type, blob.digest, blob.size)
            how = push_blob(client, ref.repository, desc, layer_opener(blob), scopes, mount_from, known_source=known)
            if started is not None:
                started.note_blob(ref, blob.digest)
            logger.info("layer %s: %s", blob.digest, how)
            return how

        # the config goes up beside the layers: the manifest, last, is what needs them all
        parallel_map(push_one, [None, *unique], jobs or options.parallel)
        got = client.put_manifest(ref, raw_manifest, media_type, scopes=scopes)
        if got != digest:
            raise DigestMismatchError(f"push {ref}: manifest digest {got}, expected {digest}")
        logger.info("pushed %s@%s", ref.context, digest)
        pushed_repo.setdefault(ref.registry, ref.repository)
    return digest


def make_index(images: Sequence[Image], *, annotations: dict[str, str] | None = None) -> tuple[bytes, str]:
    """Serialise an index over ``images`` (platforms from their configs): (raw bytes, media type).

    A Docker manifest list when every image is a Docker v2 manifest, else an OCI index.
    """
    entries = []
    docker = bool(images)
    for image in images:
        raw = image.raw_manifest()
        media_type = json.loads(raw).get("mediaType") or mt.OCI_MANIFEST
        docker = docker and media_type == mt.DOCKER_MANIFEST
        entry = {"mediaType": media_type, "digest": str(Digest.of_bytes(raw)), "size": len(raw)}
        config = json.loads(image.raw_config())
        if config.get("architecture") and config.get("os"):
            entry["platform"] = Platform.from_dict(config).to_dict()
        entries.append(entry)
    index_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
    index: dict = {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}
    if annotations:
        index["annotations"] = dict(annotations)
    return canonical_json(index), index_type


def push_index(images: Sequence[Image], refs: Sequence[Reference | str], *, options: RegistryOptions | None = None,
               raw_index: bytes | None = None, jobs: int | None = None) -> Digest:
    """Push every platform image by digest, then the index (``raw_index`` or ``make_index``) to each ref."""
    options = options or RegistryOptions()
    refs = [parse_reference(r) if isinstance(r, str) else r for r in refs]
    if raw_index is None:
        raw_index, index_type = make_index(images)
    else:
        index_type = json.loads(raw_index).get("mediaType") or mt.OCI_INDEX
    for image in images:
        digest = Digest.of_bytes(image.raw_manifest())
        push_image(image, [r.with_digest(str(digest)) for r in refs], options=options, jobs=jobs)
    index_digest = Digest.of_bytes(raw_index)
    for ref in refs:
        client = RegistryClient.for_reference(ref, options)
        client.put_manifest(ref, raw_index, index_type)
        logger.info("pushed index %s@%s", ref.context, index_digest)
    return index_digest
