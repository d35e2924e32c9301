"""Garbage collection of the layer store: least recently used first, down to a size.

An entry in use (a lease's shared lock) or being unpacked (exclusive lock) is
never removed; it still counts towards the size, so a store whose live
entries alone exceed the limit stays above it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from pybuildless.errors import UsageError
from pybuildless.image.descriptor import Digest
from pybuildless.store.layers import LayerStore

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
          "tib": 1 << 40}


@dataclass(frozen=True)
class PruneResult:
    """What pruning the layer store removed, freed and kept."""

    removed: tuple[Digest, ...]
    freed_bytes: int
    kept: int
    kept_bytes: int
    in_use: tuple[Digest, ...]  # over the limit but held by a running build
    temps_removed: int


def parse_size(text: str, flag: str = "--max-size") -> int:
    """'10GB', '512m', '0', '1.5G' -> bytes (binary units, as du and docker do)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"{flag}: not a size: {text!r} (e.g. 10GB, 512MB, 0)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def collect(store: LayerStore, max_bytes: int) -> PruneResult:
    """Remove the least recently used entries until the store holds at most ``max_bytes``."""
    temps = store.clean_temps()
    entries = sorted(store.entries(), key=lambda e: e.last_used, reverse=True)
    total = 0
    removed: list[Digest] = []
    in_use: list[Digest] = []
    freed = kept = 0
    for entry in entries:
        if total + entry.disk_bytes <= max_bytes:
            total += entry.disk_bytes
            kept += 1
            continue
        if store.remove_if_unused(entry.diff_id):
            removed.append(entry.diff_id)
            freed += entry.disk_bytes
            log.debug("layer store: removed %s (%d bytes)", entry.diff_id, entry.disk_bytes)
        else:
            in_use.append(entry.diff_id)
            total += entry.disk_bytes
            kept += 1
    return PruneResult(tuple(removed), freed, kept, total, tuple(in_use), temps)


def prune(store: LayerStore, max_bytes: int | None = None) -> PruneResult:
    """``collect`` down to ``max_bytes``; everything not in use when None."""
    return collect(store, 0 if max_bytes is None else max_bytes)
