"""Manifests, indexes and configs of base images, kept by digest next to the layer store.

With them a build whose base is already stored asks the registry only what a
tag points to (one HEAD), and nothing for ``name@sha256:...``: the index, the
platform's manifest and its config are read from here. Every document is
content-addressed, so one kept index serves every platform it lists, and a
document is checked against its digest whenever it is read (a damaged file is
dropped and fetched again).

Layout below the store root: ``manifests/sha256/<hex>``, written to a temp
name and renamed into place, so a reader never sees half a document.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pybuildless.image.descriptor import Digest

log = logging.getLogger(__name__)

MAX_DOCUMENT = 16 << 20  # configs may be large; manifests are at most 4 MiB


class ManifestRecord:
    def __init__(self, root: Path | str) -> None:
        self.dir = Path(root) / "manifests" / "sha256"

    def _path(self, digest: Digest) -> Path | None:
        if digest.algorithm != "sha256" or len(digest.hex) != 64:
            return None
        return self.dir / digest.hex

    def empty(self) -> bool:
        """Nothing kept yet (a first build): asking what a tag points to could save nothing."""
        try:
            with os.scandir(self.dir) as entries:
                return next(entries, None) is None
        except OSError:
            return True

    def get(self, digest: Digest) -> bytes | None:
        """The document with this digest, or None (missing, or damaged and now removed)."""
        path = self._path(digest)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_DOCUMENT + 1)
        except OSError:
            return None
        if Digest.of_bytes(raw) != digest:
            log.warning("kept document %s does not match its digest; fetching it again", digest)
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return raw

    def put(self, raw: bytes) -> Digest:
        """Keep ``raw`` under its sha256 digest. A store that cannot be written only costs requests."""
        digest = Digest.of_bytes(raw)
        path = self._path(digest)
        if path is None or path.exists() or len(raw) > MAX_DOCUMENT:
            return digest
        tmp = self.dir / f".{digest.hex}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_bytes(raw)
            os.rename(tmp, path)
        except OSError as e:
            log.debug("cannot keep document %s: %s", digest, e)
            try:
                tmp.unlink()
            except OSError:
                pass
        return digest
