"""Choosing one manifest from an image index for a wanted platform.

Follows containerd's platform matcher in spirit: normalise both sides, skip
attestation entries, prefer an exact variant, then an entry without a variant,
then (for arm) an older variant the wanted one can run; the first entry of the
best rank wins.
"""

from __future__ import annotations

import logging
from typing import Any

from pybuildless.errors import ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Platform

log = logging.getLogger(__name__)

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"

# Variant spellings that mean "the baseline" of an architecture.
_BASELINE_VARIANTS = {"amd64": {"v1"}, "arm64": {"8", "v8", "v8.0"}}
# Older arm variants a newer one can run, best first (containerd's fallback).
_ARM_FALLBACK = {"v8": ["v7", "v6", "v5"], "v7": ["v6", "v5"], "v6": ["v5"]}


class NoMatchingPlatformError(ImageFormatError):
    """No entry of an index serves the wanted platform; ``offered`` lists what it has."""

    def __init__(self, message: str, offered: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.offered = offered


def normalise(p: Platform) -> Platform:
    """``Platform.normalise`` plus the baseline variant spellings it leaves alone."""
    n = Platform.normalise(p.os, p.architecture, p.variant)
    variant = n.variant
    if variant in _BASELINE_VARIANTS.get(n.architecture, ()):
        variant = ""
    if n.architecture == "arm" and variant in {"5", "6", "7", "8"}:
        variant = "v" + variant
    return Platform(n.os, n.architecture, variant, p.os_version)


def is_attestation(entry: dict[str, Any]) -> bool:
    """BuildKit's provenance/SBOM entries: ``unknown/unknown`` or a reference-type annotation."""
    annotations = entry.get("annotations") or {}
    if ATTESTATION_ANNOTATION in annotations:
        return True
    platform = entry.get("platform") or {}
    return platform.get("os") == "unknown" and platform.get("architecture") == "unknown"


def _rank(want: Platform, have: Platform) -> int | None:
    """Lower is better; None means the entry cannot serve ``want``."""
    if (want.os, want.architecture) != (have.os, have.architecture):
        return None
    if want.os_version and have.os_version and want.os_version != have.os_version:
        return None
    if want.variant == have.variant:
        return 0
    if not have.variant:
        return 1
    if not want.variant:
        return 2  # a request without a variant accepts any, after exact ones
    fallback = _ARM_FALLBACK.get(want.variant, []) if want.architecture == "arm" else []
    if have.variant in fallback:
        return 3 + fallback.index(have.variant)
    return None


def serves(want: Platform, have: Platform) -> bool:
    """True when an image built for ``have`` runs as ``want`` (same rules as index selection)."""
    return _rank(normalise(want), normalise(have)) is not None


def index_entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ImageFormatError("image index has no 'manifests' list")
    return entries


def available_platforms(index: dict[str, Any]) -> list[str]:
    """The platforms an index offers (attestations left out), for error messages."""
    out = []
    for entry in index_entries(index):
        if is_attestation(entry):
            continue
        p = entry.get("platform")
        out.append(str(normalise(Platform.from_dict(p))) if p else "(no platform)")
    return out


def select_manifest(index: dict[str, Any], want: Platform) -> Descriptor:
    """The index entry that best serves ``want``; raises NoMatchingPlatformError listing what exists.

    The result may itself be an index (nested indexes): callers fetch it and
    call this again.
    """
    want = normalise(want)
    best: tuple[int, int] | None = None
    chosen: dict[str, Any] | None = None
    unplatformed: list[dict[str, Any]] = []
    for position, entry in enumerate(index_entries(index)):
        if not isinstance(entry, dict) or is_attestation(entry):
            continue
        media_type = entry.get("mediaType", "")
        if media_type and not (mt.is_manifest(media_type) or mt.is_index(media_type)):
            continue  # artifacts and other unknown kinds are not images
        if not entry.get("platform"):
            unplatformed.append(entry)
            continue
        rank = _rank(want, normalise(Platform.from_dict(entry["platform"])))
        if rank is not None and (best is None or (rank, position) < best):
            best, chosen = (rank, position), entry
    if chosen is None and unplatformed:
        # OCI layouts often omit platforms; an unlabelled entry is the best guess left.
        log.debug("no index entry names platform %s; using the first without a platform", want)
        chosen = unplatformed[0]
    if chosen is None:
        offered = available_platforms(index)
        listing = ", ".join(offered) if offered else "none"
        raise NoMatchingPlatformError(f"no image for platform {want} in the index (available: {listing})",
                                      tuple(offered))
    return Descriptor.from_dict(chosen)
