"""Re-derive and cross-check everything an Image claims (after ggcr's validate.Image).

Checks manifest <-> config <-> layer objects: digests and sizes from the bytes,
media types, diff_id counts and values, the history count invariant, and
optionally every diff_id by decompressing the layer. The first problem raises
ImageFormatError (or DigestMismatchError) with a message naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from typing import Any, BinaryIO

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest
from pybuildless.image.model import Image, Layer

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class HashingStream:
    """A readable stream that hashes and counts what is read through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def sniff_compression(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def decompressed_digest(stream: BinaryIO, compression: str) -> Digest:
    """sha256 of the decompressed content of ``stream`` (read to EOF)."""
    sha = hashlib.sha256()
    if compression == "gzip":
        reader: Any = gzip.GzipFile(fileobj=stream, mode="rb")
    elif compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    else:
        reader = stream
    while chunk := reader.read(CHUNK):
        sha.update(chunk)
    return Digest("sha256", sha.hexdigest())


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise ImageFormatError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ImageFormatError(f"{what} is not a JSON object")
    return value


def _check_layer_bytes(i: int, layer: Layer, decompress: bool) -> None:
    with layer.open_compressed() as f:
        hashing = HashingStream(f)
        if decompress:
            head = f.read(4)
            hashing.sha.update(head)
            hashing.size += len(head)
            joined = _Chain(io.BytesIO(head), hashing)
            got_diff = decompressed_digest(joined, sniff_compression(head))
            # drain what the decompressor left (trailing bytes still count for the digest)
            while hashing.read(CHUNK):
                pass
        else:
            while hashing.read(CHUNK):
                pass
    if hashing.size != layer.size:
        raise DigestMismatchError(f"layer {i}: blob has {hashing.size} bytes, size says {layer.size}")
    if hashing.sha.hexdigest() != layer.digest.hex:
        raise DigestMismatchError(f"layer {i}: blob has digest sha256:{hashing.sha.hexdigest()}, expected {layer.digest}")
    if decompress and got_diff != layer.diff_id:
        raise DigestMismatchError(f"layer {i}: uncompressed content has digest {got_diff}, diff_id says {layer.diff_id}")


class _Chain:
    def __init__(self, first: BinaryIO, second: Any) -> None:
        self.parts = [first, second]

    def read(self, n: int = -1) -> bytes:
        while self.parts:
            data = self.parts[0].read(n)
            if data:
                return data
            self.parts.pop(0)
        return b""


def validate_image(image: Image, *, decompress: bool = False, check_blobs: bool = True) -> None:
    """Raise ImageFormatError/DigestMismatchError at the first inconsistency in ``image``."""
    raw_manifest, raw_config = image.raw_manifest(), image.raw_config()
    manifest = _json(raw_manifest, "manifest")
    if manifest.get("schemaVersion") != 2:
        raise ImageFormatError(f"manifest schemaVersion is {manifest.get('schemaVersion')!r}, expected 2")
    media_type = manifest.get("mediaType", mt.OCI_MANIFEST)
    if not mt.is_manifest(media_type):
        raise ImageFormatError(f"manifest mediaType {media_type!r} is not an image manifest")
    if "manifests" in manifest:
        raise ImageFormatError("manifest has a 'manifests' list: ambiguous between manifest and index")
    try:
        config_desc = Descriptor.from_dict(manifest.get("config") or {})
    except ImageFormatError as e:
        raise ImageFormatError(f"manifest config descriptor: {e}") from None
    if config_desc.size != len(raw_config):
        raise DigestMismatchError(f"config is {len(raw_config)} bytes, manifest says {config_desc.size}")
    if Digest.of_bytes(raw_config, config_desc.digest.algorithm) != config_desc.digest:
        raise DigestMismatchError(f"config does not match manifest digest {config_desc.digest}")
    if media_type == mt.DOCKER_MANIFEST and config_desc.media_type != mt.DOCKER_CONFIG:
        raise ImageFormatError(f"Docker manifest with config mediaType {config_desc.media_type!r}")
    config = _json(raw_config, "config")
    for key in ("architecture", "os"):
        if not config.get(key):
            raise ImageFormatError(f"config has no {key!r}")
    rootfs = config.get("rootfs") or {}
    if rootfs.get("type") != "layers":
        raise ImageFormatError(f"config rootfs.type is {rootfs.get('type')!r}, expected 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise ImageFormatError("config rootfs.diff_ids is not a list")

    listed = manifest.get("layers")
    if not isinstance(listed, list):
        raise ImageFormatError("manifest has no 'layers' list")
    layers = list(image.layers())
    if not (len(listed) == len(layers) == len(diff_ids)):
        raise ImageFormatError(
            f"layer counts differ: manifest {len(listed)}, image {len(layers)}, config diff_ids {len(diff_ids)}"
        )
    history = config.get("history")
    if isinstance(history, list) and history:
        non_empty = sum(1 for h in history if not (isinstance(h, dict) and h.get("empty_layer")))
        if non_empty != len(diff_ids):
            raise ImageFormatError(
                f"config history has {non_empty} non-empty entries for {len(diff_ids)} layers"
            )
    for i, (entry, layer, diff_id) in enumerate(zip(listed, layers, diff_ids)):
        desc = Descriptor.from_dict(entry)
        if desc.digest != layer.digest:
            raise ImageFormatError(f"layer {i}: manifest says {desc.digest}, layer object is {layer.digest}")
        if desc.size != layer.size:
            raise ImageFormatError(f"layer {i}: manifest size {desc.size}, layer object size {layer.size}")
        # Docker's and OCI's gzip types are interchangeable; the compression must agree.
        if mt.layer_compression(desc.media_type) != mt.layer_compression(layer.media_type):
            raise ImageFormatError(f"layer {i}: manifest mediaType {desc.media_type!r}, layer object {layer.media_type!r}")
        if media_type == mt.DOCKER_MANIFEST and not mt.fits_docker_manifest(desc.media_type):
            raise ImageFormatError(f"layer {i}: zstd layers need an OCI manifest, not Docker's")
        if str(layer.diff_id) != diff_id:
            raise ImageFormatError(f"layer {i}: config diff_id {diff_id}, layer object {layer.diff_id}")
        if check_blobs:
            _check_layer_bytes(i, layer, decompress)

