"""OCI image layouts (image-spec ``image-layout.md``): write and read images.

Writing puts blobs first (each through a temp file, checked against its digest,
then renamed into place) and ``index.json`` last via rename, so a reader never
sees an index that names missing blobs. Adding to an existing layout keeps its
other entries; a tag that is written again moves to the new manifest.

Reading finds a manifest by tag, digest or as the only entry, follows indexes
to a platform, and verifies every blob it hands out against its digest.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest, Platform
from pybuildless.image.model import FileLayer, Image, ManifestImage, canonical_json, image_config
from pybuildless.image.platform import is_attestation, select_manifest

log = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
COPY_CHUNK = 1 << 20
MAX_JSON_BLOB = 64 << 20  # manifests/configs/indexes larger than this are refused


class LayoutError(ImageFormatError):
    """A layout directory that is missing, malformed or lacks what was asked for."""


# --- blobs -----------------------------------------------------------------


def blob_path(layout: Path, digest: Digest) -> Path:
    return Path(layout) / "blobs" / digest.algorithm / digest.hex


def copy_verified(src: BinaryIO, dst: BinaryIO, digest: Digest, size: int | None, what: str) -> int:
    """Copy ``src`` to ``dst`` while hashing; raise DigestMismatchError unless digest (and size) match."""
    hasher = digest.hasher()
    total = 0
    while chunk := src.read(COPY_CHUNK):
        hasher.update(chunk)
        dst.write(chunk)
        total += len(chunk)
    if size is not None and total != size:
        raise DigestMismatchError(f"{what}: expected {size} bytes, got {total}")
    if hasher.hexdigest() != digest.hex:
        raise DigestMismatchError(f"{what}: content has digest {digest.algorithm}:{hasher.hexdigest()}, expected {digest}")
    return total


def _write_blob(layout: Path, digest: Digest, size: int | None, src: BinaryIO, what: str) -> None:
    dest = blob_path(layout, digest)
    if dest.is_file() and not dest.is_symlink() and (size is None or dest.stat().st_size == size):
        return  # content-addressed: an existing blob of the right size is this blob
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            copy_verified(src, out, digest, size, what)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_blob_bytes(layout: Path, data: bytes) -> Descriptor:
    digest = Digest.of_bytes(data)
    _write_blob(layout, digest, len(data), io.BytesIO(data), f"blob {digest}")
    return Descriptor("", digest, len(data))


def _regular_blob(layout: Path, digest: Digest) -> Path:
    """The blob's path, refusing symlinks anywhere under ``blobs/`` (they could point outside)."""
    path = blob_path(layout, digest)
    for p in (path.parent.parent, path.parent, path):
        try:
            st = p.lstat()
        except FileNotFoundError:
            raise LayoutError(f"{layout}: blob {digest} is missing") from None
        if stat.S_ISLNK(st.st_mode):
            raise LayoutError(f"{layout}: {p.relative_to(layout)} is a symlink; refusing it")
    if not stat.S_ISREG(path.lstat().st_mode):
        raise LayoutError(f"{layout}: blob {digest} is not a regular file")
    return path


def read_blob(layout: Path, desc: Descriptor) -> bytes:
    """A small blob (manifest, config, index), verified against its descriptor."""
    path = _regular_blob(layout, desc.digest)
    if desc.size > MAX_JSON_BLOB:
        raise LayoutError(f"{layout}: blob {desc.digest} is {desc.size} bytes, too large for a manifest or config")
    data = path.read_bytes()
    if len(data) != desc.size:
        raise DigestMismatchError(f"{layout}: blob {desc.digest} has {len(data)} bytes, descriptor says {desc.size}")
    desc.digest.hasher()  # unsupported algorithms fail here with a clear error
    if Digest.of_bytes(data, desc.digest.algorithm) != desc.digest:
        raise DigestMismatchError(f"{layout}: blob {desc.digest} does not match its digest")
    return data


def verify_blob_file(path: Path, digest: Digest, size: int, what: str) -> None:
    with open(path, "rb") as f, open(os.devnull, "wb") as sink:
        copy_verified(f, sink, digest, size, what)


# --- writing ----------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def init_layout(layout: Path) -> dict[str, Any]:
    """Create ``layout`` if needed; return its current index (empty for a new layout)."""
    layout = Path(layout)
    layout.mkdir(parents=True, exist_ok=True)
    marker = layout / "oci-layout"
    if marker.exists():
        _check_marker(layout)
    else:
        _atomic_write(marker, LAYOUT_VERSION)
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    return _current_index(layout)


def _current_index(layout: Path) -> dict[str, Any]:
    """The layout's index as it is now (empty before the first image)."""
    if (layout / "index.json").exists():
        return _load_index(layout)
    return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}


def write_image_blobs(layout: Path, image: Image) -> Descriptor:
    """Write the layers, config and manifest of ``image``; return the manifest's descriptor."""
    for layer in image.layers():
        with layer.open_compressed() as src:
            _write_blob(layout, layer.digest, layer.size, src, f"layer {layer.digest}")
    raw_config = image.raw_config()
    write_blob_bytes(layout, raw_config)
    raw_manifest = image.raw_manifest()
    desc = write_blob_bytes(layout, raw_manifest)
    manifest = json.loads(raw_manifest)
    media_type = manifest.get("mediaType") or mt.OCI_MANIFEST
    platform = None
    try:
        config = json.loads(raw_config)
        if config.get("os") and config.get("architecture"):
            platform = Platform.from_dict(config)
    except ValueError:
        pass  # a non-JSON config (artifacts) simply gets no platform
    return Descriptor(media_type, desc.digest, desc.size, platform=platform)


def _update_index(index: dict[str, Any], entry: dict[str, Any], tag: str | None) -> dict[str, Any]:
    kept = []
    for old in index.get("manifests", []):
        old_tag = (old.get("annotations") or {}).get(REF_NAME)
        if tag is not None and old_tag == tag:
            continue  # the tag moves to the new manifest
        if tag is None and old_tag is None and old.get("digest") == entry["digest"]:
            continue  # the same untagged manifest once is enough
        kept.append(old)
    kept.append(entry)
    new = dict(index)
    new["schemaVersion"] = 2
    new.setdefault("mediaType", mt.OCI_INDEX)
    new["manifests"] = kept
    return new


def write_layout(
    layout: Path,
    image: Image,
    *,
    tag: str | None = None,
    annotations: dict[str, str] | None = None,
    replace_index: bool = False,
) -> Descriptor:
    """Add ``image`` to the layout at ``layout`` (created if needed), tagged ``tag`` if given.

    ``replace_index=True`` drops the index's other entries (blobs stay), which
    is what Kaniko's ``--oci-layout-path`` does: a fresh index, then the image.
    Returns the manifest descriptor as recorded in ``index.json``.
    """
    layout = Path(layout)
    init_layout(layout)
    desc = write_image_blobs(layout, image)
    entry = desc.to_dict()
    notes = dict(annotations or {})
    if tag is not None:
        notes[REF_NAME] = tag
    if notes:
        entry["annotations"] = notes
    with _index_lock(layout):
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []} if replace_index \
            else _current_index(layout)
        _atomic_write(layout / "index.json", canonical_json(_update_index(index, entry, tag)))
    log.debug("wrote %s to layout %s (tag %s)", desc.digest, layout, tag)
    return Descriptor.from_dict(entry)


def write_index_to_layout(
    layout: Path,
    images: Iterable[Image],
    *,
    tag: str | None = None,
    annotations: dict[str, str] | None = None,
    raw_index: bytes | None = None,
) -> Descriptor:
    """Write several platform images plus an index over them, tagged ``tag``; returns the index descriptor.
    ``raw_index``: that exact index (e.g. the Docker manifest list that was pushed) instead of a new one."""
    layout = Path(layout)
    init_layout(layout)
    children = [write_image_blobs(layout, image).to_dict() for image in images]
    child_index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": children}
    if annotations:
        child_index["annotations"] = dict(annotations)
    desc = write_blob_bytes(layout, raw_index if raw_index is not None else canonical_json(child_index))
    index_type = mt.OCI_INDEX if raw_index is None else (json.loads(raw_index).get("mediaType") or mt.OCI_INDEX)
    entry = Descriptor(index_type, desc.digest, desc.size).to_dict()
    if tag is not None:
        entry["annotations"] = {REF_NAME: tag}
    with _index_lock(layout):
        _atomic_write(layout / "index.json", canonical_json(_update_index(_current_index(layout), entry, tag)))
    return Descriptor.from_dict(entry)


@contextlib.contextmanager
def _index_lock(layout: Path) -> Iterator[None]:
    """Hold an exclusive flock on the layout directory while its index is read, updated and
    replaced: two writers (the build's cache-push threads, or two builds sharing ``--cache-repo
    oci:DIR``) would otherwise each rewrite the index they read and drop the other's entry.
    The directory itself is locked: the OCI layout gains no file."""
    fd = os.open(layout, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------


def _check_marker(layout: Path) -> None:
    try:
        marker = json.loads((layout / "oci-layout").read_bytes())
        version = marker["imageLayoutVersion"]
    except (OSError, ValueError, KeyError, TypeError):
        raise LayoutError(f"{layout}: 'oci-layout' is missing or malformed; not an OCI image layout") from None
    if not str(version).startswith("1."):
        raise LayoutError(f"{layout}: unsupported imageLayoutVersion {version!r}")


def _load_index(layout: Path) -> dict[str, Any]:
    try:
        index = json.loads((layout / "index.json").read_bytes())
    except FileNotFoundError:
        raise LayoutError(f"{layout}: 'index.json' is missing; not an OCI image layout") from None
    except ValueError as e:
        raise LayoutError(f"{layout}/index.json: invalid JSON: {e}") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise LayoutError(f"{layout}/index.json: not an image index (no 'manifests' list)")
    return index


def layout_tags(layout: Path) -> dict[str, Descriptor]:
    """Tag -> descriptor for every tagged entry of the layout's index."""
    layout = Path(layout)
    _check_marker(layout)
    out = {}
    for entry in _load_index(layout)["manifests"]:
        tag = (entry.get("annotations") or {}).get(REF_NAME)
        if tag is not None:
            out[tag] = Descriptor.from_dict(entry)
    return out


def _find_entry(layout: Path, index: dict[str, Any], ref: str | None) -> Descriptor:
    entries = [e for e in index["manifests"] if isinstance(e, dict) and not is_attestation(e)]
    if ref is None:
        if len(entries) != 1:
            tags = sorted(t for e in entries if (t := (e.get("annotations") or {}).get(REF_NAME)))
            raise LayoutError(
                f"{layout}: holds {len(entries)} manifests; name one by tag or digest (tags: {', '.join(tags) or 'none'})"
            )
        return Descriptor.from_dict(entries[0])
    if ":" in ref and ref.split(":", 1)[0].isalnum() and len(ref.split(":", 1)[1]) >= 32:
        digest = Digest.parse(ref)
        for e in entries:
            if e.get("digest") == str(digest):
                return Descriptor.from_dict(e)
        raise LayoutError(f"{layout}: no manifest with digest {digest}")
    for e in entries:
        names = e.get("annotations") or {}
        if ref in (names.get(REF_NAME), names.get("io.containerd.image.name")):
            return Descriptor.from_dict(e)
    tags = sorted(t for e in entries if (t := (e.get("annotations") or {}).get(REF_NAME)))
    raise LayoutError(f"{layout}: no image tagged {ref!r} (tags: {', '.join(tags) or 'none'})")


def image_from_manifest_bytes(
    raw_manifest: bytes, raw_config: bytes, layer_file: Callable[[Descriptor], Path], where: str
) -> ManifestImage:
    """Build a ManifestImage whose layers are FileLayers at ``layer_file(descriptor)``.

    diff_ids come from the config; their count must match the manifest's layers.
    """
    manifest = json.loads(raw_manifest)
    config = json.loads(raw_config)
    descriptors = [Descriptor.from_dict(d) for d in manifest.get("layers") or []]
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(descriptors):
        raise ImageFormatError(
            f"{where}: manifest lists {len(descriptors)} layers but config rootfs has {len(diff_ids)} diff_ids"
        )
    layers = [
        FileLayer(layer_file(d), d.digest, Digest.parse(diff_id), d.size, d.media_type)
        for d, diff_id in zip(descriptors, diff_ids)
    ]
    return ManifestImage(raw_manifest, raw_config, layers)


def read_layout(
    layout: Path,
    ref: str | None = None,
    *,
    platform: Platform | None = None,
    verify_layers: bool = True,
) -> ManifestImage:
    """The image tagged (or with digest) ``ref`` in the layout, or its only image.

    An index is followed to ``platform`` (default: the host's). Manifest and
    config are always verified; layer blobs too unless ``verify_layers`` is False
    (their size is still checked).
    """
    layout = Path(layout)
    _check_marker(layout)
    desc = _find_entry(layout, _load_index(layout), ref)
    want = platform or Platform.host()
    for _depth in range(8):
        raw_manifest = read_blob(layout, desc)
        try:
            manifest = json.loads(raw_manifest)
        except ValueError as e:
            raise LayoutError(f"{layout}: blob {desc.digest} is not JSON: {e}") from None
        if "manifests" in manifest and manifest.get("layers"):
            raise ImageFormatError(f"{layout}: document {desc.digest} has both 'manifests' and 'layers'")
        # an index is recognised by its descriptor or by its own content
        if not (mt.is_index(desc.media_type) or mt.is_index(manifest.get("mediaType", "")) or "manifests" in manifest):
            break
        desc = select_manifest(manifest, want)
    else:
        raise LayoutError(f"{layout}: indexes nested too deeply")
    config_desc = Descriptor.from_dict(manifest.get("config") or {})
    raw_config = read_blob(layout, config_desc)

    def layer_file(d: Descriptor) -> Path:
        path = _regular_blob(layout, d.digest)
        if verify_layers:
            verify_blob_file(path, d.digest, d.size, f"{layout}: layer {d.digest}")
        elif path.stat().st_size != d.size:
            raise DigestMismatchError(f"{layout}: layer {d.digest} has the wrong size")
        return path

    image = image_from_manifest_bytes(raw_manifest, raw_config, layer_file, str(layout))
    image_config(image)  # must be JSON
    return image
