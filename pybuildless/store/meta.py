"""What a store entry records about its layer: what was verified, and how to re-check it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pybuildless.image.descriptor import Digest

FORMAT = 1


class MetaError(ValueError):
    """An entry's metadata that cannot be read or is not this format: the entry is not used."""


@dataclass(frozen=True)
class LayerMeta:
    """What a store entry records about its layer: what was verified, and how to re-check it."""

    diff_id: str  # sha256 of the uncompressed tar, checked while unpacking
    blob_digest: str  # sha256 of the compressed stream as it was read, checked too
    uncompressed_bytes: int
    entries: int  # tar entries applied
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    specials: int
    whiteouts: int  # stored as overlay whiteouts (char 0/0), or as .wh. files if char_whiteouts is False
    opaque_dirs: int
    char_whiteouts: bool
    opaque_xattr: str  # trusted.overlay.opaque (mounted as real root) or user.overlay.opaque (userxattr)
    root_entry: bool  # the tar had a "./" entry: fs/ itself carries the layer's root metadata
    owners_applied: bool  # False: owners are recorded in an xattr (no CAP_CHOWN when unpacked)
    tree_entries: int  # entries on disk below fs/
    disk_bytes: int
    fingerprint_scheme: str
    fingerprint: str
    dirs_fingerprint: str
    unpacked_at: float
    format: int = FORMAT

    @property
    def digest(self) -> Digest:
        return Digest.parse(self.diff_id)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> "LayerMeta":
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("format") != FORMAT:
                raise MetaError(f"unknown store entry format {raw.get('format') if isinstance(raw, dict) else raw!r}")
            return cls(**raw)
        except (ValueError, TypeError) as e:
            raise MetaError(f"unreadable store entry metadata: {e}") from None


def write_dirs(path: Path, dirs: tuple[str, ...]) -> None:
    """A list of relative paths (directories, whiteouts), NUL-separated: names may hold newlines."""
    path.write_bytes(b"\0".join(os.fsencode(d) for d in dirs))


def read_dirs(path: Path) -> list[str]:
    data = path.read_bytes()
    return [os.fsdecode(d) for d in data.split(b"\0")] if data else []
