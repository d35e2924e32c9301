"""Images in a registry: read them as ``Image`` views, download them (pushing: ``push.py``).

``fetch_image`` resolves a reference (index → platform manifest) and returns a
``RemoteImage`` whose layers stream from the registry, verified, when opened.
``pull_image`` downloads every layer in parallel into a directory and returns
an image of ``FileLayer``s. Layer bytes pulled are reported to ``pybuildless.transfer``
(a live display on a terminal, nothing otherwise).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Protocol, Sequence

from pybuildless import transfer
from pybuildless.errors import DigestMismatchError, ImageFormatError, NotFoundError, RegistryError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest, Platform
from pybuildless.image.model import FileLayer, ManifestImage
from pybuildless.image.platform import select_manifest
from pybuildless.registry import ahead
from pybuildless.registry.client import FetchedManifest, RegistryClient, check_manifest
from pybuildless.registry.jobs import parallel_map
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.push import make_index, push_image, push_index  # kept importable from here
from pybuildless.name import Reference, parse_reference
from pybuildless.registry.verify import VerifyingReader

logger = logging.getLogger(__name__)

MAX_CONFIG_SIZE = 16 << 20
MAX_INDEX_DEPTH = 4


class RemoteLayer:
    """A layer blob in a registry repository; ``open_compressed()`` streams and verifies it."""

    def __init__(self, client: RegistryClient, source: Reference, desc: Descriptor, diff_id: Digest) -> None:
        self._client = client
        self._source = source
        self._desc = desc
        self._diff_id = diff_id

    digest = property(lambda self: self._desc.digest)
    size = property(lambda self: self._desc.size)
    media_type = property(lambda self: self._desc.media_type)
    diff_id = property(lambda self: self._diff_id)
    source = property(lambda self: self._source)
    descriptor = property(lambda self: self._desc)

    def open_compressed(self) -> VerifyingReader:
        reader = self._client.open_blob(self._source.repository, self._desc)
        return reader.report_to(transfer.start(str(self._desc.digest), self._desc.size, "pulling"))

    def __repr__(self) -> str:
        return f"RemoteLayer({self._source.context}@{self._desc.digest})"


class RemoteImage:
    """A platform image in a registry, read lazily (layers fetched only when opened)."""

    def __init__(self, reference: Reference, source: Reference, client: RegistryClient, raw_manifest: bytes,
                 raw_config: bytes, index_digest: Digest | None) -> None:
        self.reference = reference  # what was asked for
        self.source = source  # where it was read from (a mirror, or the reference itself)
        self.client = client
        self.index_digest = index_digest
        self._raw_manifest = raw_manifest
        self._raw_config = raw_config
        manifest = json.loads(raw_manifest)
        config = json.loads(raw_config)
        descs = [Descriptor.from_dict(d) for d in manifest.get("layers") or []]
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(descs):
            raise ImageFormatError(f"{reference}: config lists {len(diff_ids)} diff_ids for {len(descs)} layers")
        self._layers = [RemoteLayer(client, source, d, Digest.parse(i)) for d, i in zip(descs, diff_ids)]

    def raw_manifest(self) -> bytes:
        return self._raw_manifest

    def raw_config(self) -> bytes:
        return self._raw_config

    def layers(self) -> Sequence[RemoteLayer]:
        return list(self._layers)

    @cached_property
    def digest(self) -> Digest:
        return Digest.of_bytes(self._raw_manifest)

    @property
    def media_type(self) -> str:
        return json.loads(self._raw_manifest).get("mediaType") or mt.OCI_MANIFEST

    @property
    def digest_reference(self) -> Reference:
        """Where this exact platform manifest lives: ``registry/repo@digest`` (for logs and pinning)."""
        return Reference(self.source.registry, self.source.repository, None, str(self.digest))


def _candidates(ref: Reference, options: RegistryOptions) -> list[Reference]:
    mirrors = options.mirrors_for(ref)
    if options.skip_default_registry_fallback and mirrors:
        return mirrors
    return mirrors + [ref]


class Documents(Protocol):
    """Manifests, indexes and configs kept locally by digest (``store.manifests.ManifestRecord``)."""

    def get(self, digest: Digest) -> bytes | None: ...  # verified against ``digest``
    def put(self, raw: bytes) -> Digest: ...
    def empty(self) -> bool: ...  # nothing kept at all


def fetch_image(ref: Reference | str, *, platform: Platform | None = None,
                options: RegistryOptions | None = None, documents: Documents | None = None,
                pull: bool = True) -> RemoteImage:
    """Resolve ``ref`` to one platform image (mirrors first, then the original).

    ``pull=False`` reads with the push side's flags (Kaniko's layer cache: ``--insecure``).

    With ``documents``, what they hold is not asked for again: a tag costs one HEAD,
    a digest reference no request at all, once its index, manifest and config are kept.
    """
    ref = parse_reference(ref) if isinstance(ref, str) else ref
    options = options or RegistryOptions()
    platform = platform or Platform.host()
    candidates = _candidates(ref, options)
    for n, candidate in enumerate(candidates):
        try:
            return _fetch_from(ref, candidate, platform, options, documents, pull)
        except (RegistryError, DigestMismatchError) as e:
            if n == len(candidates) - 1:
                raise
            logger.warning("pull of %s from mirror %s failed (%s); trying the next", ref, candidate.registry, e)
    raise AssertionError("unreachable")


def _kept_manifest(documents: Documents | None, digest: Digest, what: str) -> FetchedManifest | None:
    raw = documents.get(digest) if documents is not None else None
    if raw is None:
        return None
    return FetchedManifest(raw, check_manifest(raw, "", what), digest)


def _head_manifest(client: RegistryClient, ref: Reference) -> Descriptor | None:
    """One HEAD per build for a reference: the base-image cache's look-up (``image_exists``)
    and the layer store's (``_get_manifest``) ask the same question of a tag."""
    build = ahead.current(client.options)
    if build is None:
        return client.head_manifest(ref)
    return build.resolve_once(("HEAD", ref.registry, ref.repository, ref.identifier),
                              lambda: client.head_manifest(ref))


def _get_manifest(client: RegistryClient, ref: Reference, documents: Documents | None) -> FetchedManifest:
    """By digest: from ``documents`` when kept. By tag: one HEAD says the digest, and a kept
    document saves the GET (the content is checked against that digest, as a GET by digest is)."""
    if documents is None:
        return client.get_manifest(ref)
    if ref.digest:
        kept = _kept_manifest(documents, Digest.parse(ref.digest), f"manifest {ref}")
    elif documents.empty():
        kept = None  # a first build: the HEAD could not save the GET
    else:
        try:
            desc = _head_manifest(client, ref)
        except NotFoundError:
            # a HEAD carries no error body: the GET below fails with the registry's own words
            # (MANIFEST_UNKNOWN, NAME_UNKNOWN), which a user of a missing base needs to see
            desc = None
        kept = _kept_manifest(documents, desc.digest, f"manifest {ref}") if desc is not None else None
    if kept is not None:
        return kept
    fetched = client.get_manifest(ref)
    documents.put(fetched.raw)
    return fetched


def _fetch_from(ref: Reference, source: Reference, platform: Platform, options: RegistryOptions,
                documents: Documents | None = None, pull: bool = True) -> RemoteImage:
    client = RegistryClient.for_reference(source, options, pull=pull)
    build = ahead.current(options)
    if build is None:
        fetched = _get_manifest(client, source, documents)
    else:  # once per build: every platform and stage naming the tag picks from the same index
        fetched = build.resolve_once((source.registry, source.repository, source.identifier),
                                     lambda: _get_manifest(client, source, documents))
    index_digest = None
    target = source
    for _ in range(MAX_INDEX_DEPTH):
        if not mt.is_index(fetched.media_type):
            break
        index_digest = index_digest or fetched.digest
        # the platform is chosen here from the index, so one kept index serves every platform
        chosen = select_manifest(json.loads(fetched.raw), platform)
        target = source.with_digest(str(chosen.digest))
        fetched = _get_manifest(client, target, documents)
        if chosen.size and len(fetched.raw) != chosen.size:
            raise DigestMismatchError(f"manifest {target}: {len(fetched.raw)} bytes, index says {chosen.size}")
    else:
        raise ImageFormatError(f"{ref}: image indexes nested more than {MAX_INDEX_DEPTH} deep")
    manifest = json.loads(fetched.raw)
    config_desc = Descriptor.from_dict(manifest.get("config") or {})
    raw_config = documents.get(config_desc.digest) if documents is not None else None
    if raw_config is None or len(raw_config) != config_desc.size:
        raw_config = client.read_blob(source.repository, config_desc, limit=MAX_CONFIG_SIZE)
        if documents is not None:
            documents.put(raw_config)
    if index_digest is None:
        _warn_platform(ref, raw_config, platform)
    logger.info("resolved %s to %s", ref, fetched.digest)
    return RemoteImage(ref, source, client, fetched.raw, raw_config, index_digest)


def _warn_platform(ref: Reference, raw_config: bytes, wanted: Platform) -> None:
    """A single-platform image is used whatever it is built for, as Docker does, with a warning."""
    try:
        config = json.loads(raw_config)
        have = Platform.from_dict(config) if config.get("architecture") else None
    except (ValueError, AttributeError, ImageFormatError):
        return
    if have is not None and not Platform.normalise(wanted.os, wanted.architecture, wanted.variant).matches(have):
        logger.warning("image %s is for platform %s, not the requested %s", ref, have, wanted)


@dataclass(frozen=True)
class PulledLayer(FileLayer):
    """A downloaded layer that remembers the repository it came from, so pushing it to the
    same registry mounts it instead of uploading it (it is a ``MountableLayer``)."""

    source: Reference | None = None


# -- pull to disk ------------------------------------------------------------------------


def _cached_ok(path: Path, desc: Descriptor) -> bool:
    """A blob already on disk counts only if size and digest both match."""
    try:
        if path.stat().st_size != desc.size:
            return False
        with open(path, "rb") as f, VerifyingReader(f, desc.digest, desc.size) as r:
            r.drain()
        return True
    except (OSError, DigestMismatchError):
        return False


def pull_image(ref: Reference | str, dest: Path, *, platform: Platform | None = None,
               options: RegistryOptions | None = None, jobs: int | None = None,
               blob_path: Callable[[Digest], Path] | None = None) -> ManifestImage:
    """Download all layers of ``ref`` into ``dest`` in parallel; verified blobs already there are kept.

    The layers are ``PulledLayer``s: local files that remember their source repository.

    Files are named ``<algorithm>-<hex>`` unless ``blob_path(digest)`` says otherwise
    (an OCI layout's ``blobs/<algorithm>/<hex>``).
    """
    remote = fetch_image(ref, platform=platform, options=options)
    options = options or RegistryOptions()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(layer: RemoteLayer) -> FileLayer:
        path = blob_path(layer.digest) if blob_path else dest / f"{layer.digest.algorithm}-{layer.digest.hex}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _cached_ok(path, layer.descriptor):
            remote.client.download_blob(remote.source.repository, layer.descriptor, path,
                                        progress=transfer.start(str(layer.digest), layer.size, "pulling"))
            logger.info("pulled layer %s (%d bytes)", layer.digest, layer.size)
        return PulledLayer(path, layer.digest, layer.diff_id, layer.size, layer.media_type, remote.source)

    unique = list({layer.digest: layer for layer in remote.layers()}.values())  # a blob may repeat
    files = {f.digest: f for f in parallel_map(fetch, unique, jobs or options.parallel)}
    layers = [PulledLayer(files[l.digest].path, l.digest, l.diff_id, l.size, l.media_type, remote.source)
              for l in remote.layers()]
    return ManifestImage(remote.raw_manifest(), remote.raw_config(), layers)


def image_exists(ref: Reference | str, *, options: RegistryOptions | None = None) -> Descriptor | None:
    """The manifest descriptor for ``ref``, or None if the registry does not have it."""
    ref = parse_reference(ref) if isinstance(ref, str) else ref
    client = RegistryClient.for_reference(ref, options or RegistryOptions(), pull=True)
    try:
        desc = _head_manifest(client, ref)
        if desc is None:
            fetched = client.get_manifest(ref)
            desc = Descriptor(fetched.media_type, fetched.digest, len(fetched.raw))
        return desc
    except NotFoundError:
        return None


__all__ = ["PulledLayer", "RemoteImage", "RemoteLayer", "fetch_image", "image_exists", "make_index",
           "pull_image", "push_image", "push_index"]
