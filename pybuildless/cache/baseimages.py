"""The base-image cache (``--cache-dir``) filled by the warmer.

One OCI layout holds every warmed image, tagged ``digest-<hex>`` with the
digest the registry gives for the reference (an index or a manifest). A build
with ``--cache`` asks the registry only for that digest (one HEAD request; none
for ``name@sha256:...``) and, when the layout has it, reads manifest, config and
layers from disk. Unlike Kaniko's cache, every blob is verified when read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pybuildless.errors import PybuildlessError
from pybuildless.image.descriptor import Platform
from pybuildless.image.layout import blob_path, layout_tags, read_layout, write_layout
from pybuildless.image.model import Image
from pybuildless.name import Reference, parse_reference
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import image_exists, pull_image

log = logging.getLogger(__name__)


def _tag(digest_hex: str) -> str:
    return f"digest-{digest_hex}"


def _top_digest(ref: Reference, options: RegistryOptions) -> str | None:
    if ref.digest:
        return ref.digest.split(":", 1)[1]
    desc = image_exists(ref, options=options)
    return desc.digest.hex if desc is not None else None


def lookup(cache_dir: Path, name: str, *, platform: Platform, options: RegistryOptions) -> Image | None:
    if not (cache_dir / "index.json").exists():
        return None
    ref = parse_reference(name)
    try:
        digest = _top_digest(ref, options)
        if digest is None or _tag(digest) not in layout_tags(cache_dir):
            return None
        image = read_layout(cache_dir, _tag(digest), platform=platform)
    except PybuildlessError as e:
        log.warning("base-image cache: %s unusable (%s); pulling", name, e)
        return None
    log.info("base image %s from the cache in %s", name, cache_dir)
    return image


def warm(cache_dir: Path, name: str, *, platform: Platform, options: RegistryOptions, force: bool = False) -> str:
    """Pull ``name`` into the cache layout; returns the tag it is stored under."""
    ref = parse_reference(name)
    digest = _top_digest(ref, options)
    if digest is None:
        raise PybuildlessError(f"warm: {name} not found in its registry")
    tag = _tag(digest)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not force and (cache_dir / "index.json").exists() and tag in layout_tags(cache_dir):
        log.info("%s already cached as %s", name, tag)
        return tag
    image = pull_image(ref, cache_dir, platform=platform, options=options,
                       blob_path=lambda d: blob_path(cache_dir, d))
    write_layout(cache_dir, image, tag=tag)
    return tag
