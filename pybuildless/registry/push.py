"""Pushing images: blobs first (skipped when present, mounted across repositories of a
registry, else uploaded), then the manifest, to one or more destinations; indexes over them.

Layer bytes pushed are reported to ``pybuildless.transfer`` (a live display on a terminal).
"""

from __future__ import annotations

import io
import json
import logging
from typing import BinaryIO, Callable, Sequence

from pybuildless import transfer
from pybuildless.errors import DigestMismatchError, ImageFormatError, RegistryError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest, Platform
from pybuildless.image.model import Image, Layer, MountableLayer, canonical_json
from pybuildless.name import Reference, parse_reference
from pybuildless.registry import ahead
from pybuildless.registry.client import RegistryClient
from pybuildless.registry.jobs import parallel_map
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.verify import CHUNK

# The records keep the name they had when pushing lived in remote.py: log lines read the same.
logger = logging.getLogger("pybuildless.registry.remote")


class _Sized:
    """A file object with a known length, so requests sends Content-Length, never chunked.

    Each one is one upload attempt as far as the progress display is concerned: the
    transport opens a fresh one per attempt and closes it after sending.
    """

    def __init__(self, f: BinaryIO, size: int, progress: transfer.Transfer = transfer.NULL_TRANSFER) -> None:
        self._f, self._size, self._pos = f, size, 0
        self._progress = progress

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(CHUNK if n is None or n < 0 else n)
        self._pos += len(data)
        self._progress.advance(len(data))
        return data

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            self._progress.finish()

    def __enter__(self) -> "_Sized":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _opener(layer: Layer) -> Callable[[], _Sized]:
    def open_layer() -> _Sized:
        f = layer.open_compressed()
        return _Sized(f, layer.size, transfer.start(str(layer.digest), layer.size, "pushing"))

    return open_layer


# Up to this size a blob is sent without asking first whether the repository has it: the
# HEAD (distribution-spec "Checking if content exists", optional) costs a round trip, about
# what sending the bytes again costs, and a blob just built is almost always new.
SMALL_BLOB = 256 << 10


def push_scopes(ref: Reference, sources: set[str]) -> tuple[str, ...]:
    """One token for everything a destination needs: push there, pull from the mount sources."""
    return (ref.scope("push,pull"),) + tuple(f"repository:{s}:pull" for s in sorted(sources - {ref.repository}))


def _push_blob(client: RegistryClient, repository: str, desc: Descriptor, opener, scopes: tuple[str, ...],
               mount_from: str | None, *, known_source: bool = False, session: str | None = None) -> str:
    """Make ``desc`` exist in ``repository``: nothing when it is known to be there, a mount when
    another repository of the registry has it, else an upload (the only case that reads the blob).

    ``known_source``: ``mount_from`` is where the blob was read from (a base image's layer, or
    an earlier destination), so it is there: the mount is asked for at once, and a registry
    answers it 201 when the destination has the blob too, so no HEAD is needed first.
    ``session``: an upload already opened in ``repository`` (by the push-permission check);
    it is used, never left open.
    """
    small = 0 <= desc.size <= SMALL_BLOB
    if session is not None:  # one PUT into it costs no more than a HEAD or a mount would
        location = session
    else:
        if known_source and mount_from == repository:
            return "exists"  # the image was read from this repository: its manifest holds the blob
        if not (known_source and mount_from) and not small and client.blob_exists(repository, desc.digest,
                                                                                   scopes=scopes):
            return "exists"
        location = None
        if mount_from and mount_from != repository:
            location = client.mount_blob(repository, desc.digest, mount_from, scopes=scopes)
            if location is None:
                return "mounted"
    if small:
        client.upload_small(repository, desc, opener, scopes=scopes, location=location)
    else:
        client.upload_blob(repository, desc, opener, scopes=scopes, location=location)
    return "uploaded"


def _mount_source(layer: Layer, ref: Reference) -> str | None:
    """The repository of ``ref``'s registry a base layer was read from, if any."""
    if isinstance(layer, MountableLayer) and getattr(layer.source, "registry", None) == ref.registry:
        return layer.source.repository
    return None


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
        sources |= {s for s in (_mount_source(layer, ref) for layer in layers) if s}
        scopes = push_scopes(ref, sources)
        session = started.take_session(ref) if started is not None else None

        def push_one(blob: Layer | None, ref=ref, client=client, scopes=scopes, done_repo=done_repo) -> str:
            if blob is None:  # the config: in the session the permission check opened, if any
                return _push_blob(client, ref.repository, config_desc, lambda: io.BytesIO(config_raw), scopes,
                                  done_repo, known_source=done_repo is not None, session=session)
            early = started.blob_result(ref, blob.digest) if started is not None else None
            if early is not None:
                logger.info("layer %s: %s while the build ran", blob.digest, early)
                return early
            mount_from, known = done_repo, done_repo is not None  # an earlier destination got every blob
            source = _mount_source(blob, ref)
            if source is not None and (mount_from is None or source == ref.repository):
                mount_from, known = source, True
            desc = Descriptor(blob.media_type, blob.digest, blob.size)
            how = _push_blob(client, ref.repository, desc, _opener(blob), scopes, mount_from, known_source=known)
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
