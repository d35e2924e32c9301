"""``docker save``-style tarballs, written as the combined kind Docker 25+ writes.

The archive holds ``manifest.json`` (Config/RepoTags/Layers) and
``repositories`` for ``docker load``, and is at the same time an OCI image
layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``): ``manifest.json``
points at the blob paths. Layers are streamed from their source into the
archive (hashed on the way and checked), never held in memory whole.

Reading accepts that kind and the older one (``<id>/layer.tar`` and
``<hex>.json``): uncompressed layers become layers as they are, with their
digest computed; layers are served straight out of the archive file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from pybuildless.errors import DigestMismatchError, ImageFormatError, PybuildlessError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest
from pybuildless.image.layout import LAYOUT_VERSION, REF_NAME
from pybuildless.image.model import Image, ManifestImage, canonical_json, image_from_raw_config
from pybuildless.image.validate import HashingStream, sniff_compression
from pybuildless.name import parse_reference

log = logging.getLogger(__name__)

CHUNK = 1 << 20
CONTAINERD_NAME = "io.containerd.image.name"


class TarballError(ImageFormatError):
    """A tarball that is not a readable docker-save archive."""


# --- writing ----------------------------------------------------------------


def split_repo_tag(name: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag), the tag defaulting to ``latest``; digests are refused."""
    if "@" in name:
        raise ImageFormatError(f"tarball tag {name!r}: RepoTags must be tags, not digests")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


def _info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = size, 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def write_tarball(path: Path, image: Image, repo_tags: Sequence[str] = ()) -> None:
    """Write ``image`` tagged ``repo_tags`` as a docker-loadable tarball that is also an OCI layout."""
    write_tarball_multi(path, [(image, list(repo_tags))])


def write_tarball_multi(path: Path, entries: Sequence[tuple[Image, Sequence[str]]], *,
                        index: tuple[bytes, Sequence[str]] | None = None) -> None:
    """Several images in one archive, each with its own tags; written to a temp file, then renamed.

    ``index`` = (raw image index over the images, its tags): ``index.json`` then names that
    index (OCI readers see one multi-platform image); ``manifest.json`` still lists every
    image with the tags given in ``entries``, which is all ``docker load`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _write_entries(tar, entries, index)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote tarball %s", path)


def _write_entries(tar: tarfile.TarFile, entries: Sequence[tuple[Image, Sequence[str]]],
                   index: tuple[bytes, Sequence[str]] | None = None) -> None:
    _add_bytes(tar, "oci-layout", LAYOUT_VERSION)
    tar.addfile(_info("blobs", directory=True))
    tar.addfile(_info("blobs/sha256", directory=True))
    written: set[str] = set()
    docker_manifest: list[dict[str, Any]] = []
    index_entries: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}

    def blob_name(digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.hex}"

    def add_blob_bytes(data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        if str(digest) not in written:
            _add_bytes(tar, blob_name(digest), data)
            written.add(str(digest))
        return digest

    for image, tags in entries:
        layer_names = []
        for layer in image.layers():
            name = blob_name(layer.digest)
            layer_names.append(name)
            if str(layer.digest) in written:
                continue
            with layer.open_compressed() as src:
                hashing = HashingStream(src)
                tar.addfile(_info(name, layer.size), hashing)  # reads exactly layer.size bytes
                if hashing.size != layer.size or hashing.sha.hexdigest() != layer.digest.hex or src.read(1):
                    raise DigestMismatchError(f"layer {layer.digest}: content does not match its digest or size")
            written.add(str(layer.digest))
        config_digest = add_blob_bytes(image.raw_config())
        raw_manifest = image.raw_manifest()
        manifest_digest = add_blob_bytes(raw_manifest)
        normalised = []
        for name in tags:
            repo, tag = split_repo_tag(name)
            normalised.append(f"{repo}:{tag}")
            repositories.setdefault(repo, {})[tag] = config_digest.hex
        docker_manifest.append(
            {"Config": blob_name(config_digest), "RepoTags": normalised or None, "Layers": layer_names}
        )
        media_type = json.loads(raw_manifest).get("mediaType") or mt.OCI_MANIFEST
        base = Descriptor(media_type, manifest_digest, len(raw_manifest)).to_dict()
        if not normalised:
            index_entries.append(base)
        for full in normalised:
            index_entries.append({**base, "annotations": {CONTAINERD_NAME: full, REF_NAME: split_repo_tag(full)[1]}})

    if index is not None:
        raw_index, index_tags = index
        media_type = json.loads(raw_index).get("mediaType") or mt.OCI_INDEX
        base = Descriptor(media_type, add_blob_bytes(raw_index), len(raw_index)).to_dict()
        index_entries = [{**base, "annotations": {CONTAINERD_NAME: f"{repo}:{tag}", REF_NAME: tag}}
                         for repo, tag in map(split_repo_tag, index_tags)] or [base]
    _add_bytes(tar, "index.json", canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index_entries}))
    _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
    if repositories:
        _add_bytes(tar, "repositories", json.dumps(repositories).encode())


# --- reading ----------------------------------------------------------------


class _Section(io.RawIOBase):
    """A read-only window [offset, offset+length) of a file, usable wherever a binary file is."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._f = open(path, "rb")
        self._f.seek(offset)
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        n = self._f.readinto(view)
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class TarMemberLayer:
    """A layer blob stored as one member of a tar archive on disk."""

    archive: Path
    offset: int
    length: int
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str

    def open_compressed(self) -> BinaryIO:
        return io.BufferedReader(_Section(self.archive, self.offset, self.length), CHUNK)


class _Archive:
    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            head = f.read(4)
        if sniff_compression(head) != "none":
            raise TarballError(f"{path}: the archive is compressed; decompress it first (e.g. gunzip)")
        try:
            self.tar = tarfile.open(path, mode="r:")
        except tarfile.TarError as e:
            raise TarballError(f"{path}: not a tar archive: {e}") from None
        self.members = {posixpath.normpath(m.name.lstrip("/")): m for m in self.tar.getmembers()}

    def member(self, name: str, _depth: int = 0) -> tarfile.TarInfo:
        key = posixpath.normpath(name.lstrip("/"))
        m = self.members.get(key)
        if m is None:
            raise TarballError(f"{self.path}: no member {name!r}")
        if (m.issym() or m.islnk()) and _depth < 16:
            # old docker save links identical layers; resolve inside the archive only
            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(key), m.linkname)
            return self.member(posixpath.normpath(target), _depth + 1)
        if not m.isfile():
            raise TarballError(f"{self.path}: member {name!r} is not a regular file")
        return m

    def has(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        m = self.member(name)
        if m.size > limit:
            raise TarballError(f"{self.path}: member {name!r} is too large ({m.size} bytes)")
        f = self.tar.extractfile(m)
        assert f is not None
        return f.read()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as e:
            raise TarballError(f"{self.path}: {name} is not valid JSON: {e}") from None

    def digest_of(self, m: tarfile.TarInfo) -> Digest:
        sha = hashlib.sha256()
        with _Section(self.path, m.offset_data, m.size) as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
        return Digest("sha256", sha.hexdigest())

    def head(self, m: tarfile.TarInfo) -> bytes:
        with _Section(self.path, m.offset_data, m.size) as f:
            return f.read(4)


def _pick_entry(archive: _Archive, manifest: Any, tag: str | None) -> dict[str, Any]:
    if not isinstance(manifest, list) or not manifest:
        raise TarballError(f"{archive.path}: manifest.json is not a non-empty list")
    if tag is None:
        if len(manifest) != 1:
            raise TarballError(f"{archive.path}: holds {len(manifest)} images; name one by tag")
        return manifest[0]
    wanted = _comparable(tag)
    for entry in manifest:
        if any(_comparable(t) == wanted for t in entry.get("RepoTags") or []):
            return entry
    tags = sorted(t for e in manifest for t in (e.get("RepoTags") or []))
    raise TarballError(f"{archive.path}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})")


def _comparable(name: str) -> str:
    """A tag fully qualified as Docker does (``foo`` == ``docker.io/library/foo:latest``)."""
    try:
        return parse_reference(name).name
    except PybuildlessError:
        return name


def _oci_manifest_for(archive: _Archive, raw_config: bytes) -> bytes | None:
    """The archive's own OCI manifest for this config, if it is also an OCI layout."""
    if not (archive.has("index.json") and archive.has("oci-layout")):
        return None
    config_digest = str(Digest.of_bytes(raw_config))
    try:
        index = archive.json("index.json")
        for entry in index.get("manifests") or []:
            desc = Descriptor.from_dict(entry)
            if not mt.is_manifest(desc.media_type):
                continue
            raw = archive.read(f"blobs/{desc.digest.algorithm}/{desc.digest.hex}")
            if Digest.of_bytes(raw, desc.digest.algorithm) != desc.digest:
                raise DigestMismatchError(f"{archive.path}: manifest blob {desc.digest} does not match its digest")
            if (json.loads(raw).get("config") or {}).get("digest") == config_digest:
                return raw
    except (TarballError, ImageFormatError, ValueError, AttributeError) as e:
        if isinstance(e, DigestMismatchError):
            raise
        log.debug("%s: ignoring its OCI index: %s", archive.path, e)
    return None


def read_tarball(path: Path, tag: str | None = None) -> ManifestImage:
    """The image tagged ``tag`` (or the only image) of a docker-save tarball, old or combined kind."""
    archive = _Archive(Path(path))
    try:
        if not archive.has("manifest.json"):
            raise TarballError(f"{path}: no manifest.json (the pre-1.10 docker save format is not supported)")
        entry = _pick_entry(archive, archive.json("manifest.json"), tag)
        raw_config = archive.read(entry.get("Config") or "")
        config = json.loads(raw_config)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layer_paths = entry.get("Layers") or []
        if len(diff_ids) != len(layer_paths):
            raise TarballError(
                f"{path}: manifest.json lists {len(layer_paths)} layers but the config has {len(diff_ids)} diff_ids"
            )
        members = [archive.member(p) for p in layer_paths]
        raw_manifest = _oci_manifest_for(archive, raw_config)
        if raw_manifest is not None:
            descs = [Descriptor.from_dict(d) for d in json.loads(raw_manifest).get("layers") or []]
            if [str(d.digest) for d in descs] == [f"sha256:{posixpath.basename(p)}" for p in layer_paths]:
                layers = [
                    TarMemberLayer(archive.path, m.offset_data, m.size, d.digest, Digest.parse(diff), d.size, d.media_type)
                    for m, d, diff in zip(members, descs, diff_ids)
                ]
                for layer, m in zip(layers, members):
                    if m.size != layer.size:
                        raise DigestMismatchError(f"{path}: layer {layer.digest} has the wrong size")
                return ManifestImage(raw_manifest, raw_config, layers)
        layers = []
        for name, m, diff in zip(layer_paths, members, diff_ids):
            digest = archive.digest_of(m)
            compression = sniff_compression(archive.head(m))
            if compression == "none":
                if str(digest) != diff:
                    raise DigestMismatchError(f"{path}: {name} has digest {digest}, config diff_id says {diff}")
                media_type = mt.OCI_LAYER
            else:
                media_type = mt.OCI_LAYER_GZIP if compression == "gzip" else mt.OCI_LAYER_ZSTD
            layers.append(TarMemberLayer(archive.path, m.offset_data, m.size, digest, Digest.parse(diff), m.size, media_type))
        return image_from_raw_config(raw_config, layers)
    except ValueError as e:
        raise TarballError(f"{path}: malformed JSON: {e}") from None
    finally:
        archive.tar.close()
