"""Kaniko's image output files: digest file, name-with-digest files, BUILDER_OUTPUT.

Formats follow Kaniko exactly:
- ``--digest-file``: the manifest digest ``sha256:...`` with no newline; a value
  starting with ``https://`` is an HTTP PUT of that body to the URL instead.
- ``--image-name-with-digest-file``: ``REPO@sha256:...`` plus newline, one line
  per destination, names fully qualified as go-containerregistry prints them
  (Docker Hub as ``index.docker.io``, ``library/`` added).
- ``--image-name-tag-with-digest-file``: ``REPO:TAG@sha256:...`` lines.
- ``$BUILDER_OUTPUT/images``: JSON lines ``{"name": REPO:TAG, "digest": ...}``.

Files are written atomically (temp file + rename) when they are ordinary files;
special targets such as ``/dev/termination-log`` (often a bind mount, where a
rename fails) are written in place.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from pybuildless.errors import PybuildlessError
from pybuildless.image.descriptor import Digest
from pybuildless.name import DOCKER_HUB, parse_reference

log = logging.getLogger(__name__)

GGCR_HUB = "index.docker.io"  # how go-containerregistry spells Docker Hub in names


class OutputFileError(PybuildlessError):
    """An output file (digest file, name file) could not be written."""


def _in_place(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, what: str = "output file") -> None:
    """Write ``data`` to ``path`` via a temp file and rename; parents are created."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            _in_place(path, data)  # a device or pipe: renaming over it would be wrong
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            try:
                os.replace(tmp, path)
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
                    raise
                # a bind-mounted file (Kubernetes' termination log) cannot be replaced
                Path(tmp).unlink(missing_ok=True)
                _in_place(path, data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise OutputFileError(f"writing {what} {path}: {e.strerror or e}") from None


def _digest_text(digest: Digest | str) -> str:
    return str(digest if isinstance(digest, Digest) else Digest.parse(str(digest)))


def write_digest_file(path: str | os.PathLike[str], digest: Digest | str, *, timeout: float = 30.0) -> None:
    """``--digest-file``: the digest, no newline; an ``https://`` target gets it by HTTP PUT."""
    body = _digest_text(digest).encode()
    target = os.fspath(path)
    if target.startswith("https://"):
        import requests

        try:
            resp = requests.put(target, data=body, timeout=timeout)
        except requests.RequestException as e:
            raise OutputFileError(f"--digest-file: PUT to {_redact(target)} failed: {type(e).__name__}") from None
        if resp.status_code >= 300:
            raise OutputFileError(f"--digest-file: PUT to {_redact(target)} answered {resp.status_code}")
        return
    atomic_write(target, body, what="--digest-file")


def _redact(url: str) -> str:
    # signed upload URLs carry their credentials in the query string
    return url.split("?", 1)[0] + ("?REDACTED" if "?" in url else "")


def _ggcr_repository(destination: str) -> tuple[str, str]:
    """(fully qualified repository as ggcr prints it, tag) for a destination reference."""
    try:
        ref = parse_reference(destination)
    except PybuildlessError as e:
        raise OutputFileError(f"--destination {destination!r}: {e}") from None
    registry = GGCR_HUB if ref.registry == DOCKER_HUB else ref.registry
    return f"{registry}/{ref.repository}", ref.tag or "latest"


def image_name_with_digest(destinations: Iterable[str], digest: Digest | str) -> str:
    d = _digest_text(digest)
    return "".join(f"{_ggcr_repository(dest)[0]}@{d}\n" for dest in destinations)


def image_name_tag_with_digest(destinations: Iterable[str], digest: Digest | str) -> str:
    d = _digest_text(digest)
    lines = []
    for dest in destinations:
        repo, tag = _ggcr_repository(dest)
        lines.append(f"{repo}:{tag}@{d}\n")
    return "".join(lines)


def write_image_name_with_digest_file(path: str | os.PathLike[str], destinations: Iterable[str], digest: Digest | str) -> None:
    """``--image-name-with-digest-file``: ``REPO@DIGEST`` lines, one per destination."""
    atomic_write(path, image_name_with_digest(destinations, digest).encode(), what="--image-name-with-digest-file")


def write_image_name_tag_with_digest_file(
    path: str | os.PathLike[str], destinations: Iterable[str], digest: Digest | str
) -> None:
    """``--image-name-tag-with-digest-file``: ``REPO:TAG@DIGEST`` lines, one per destination."""
    atomic_write(
        path, image_name_tag_with_digest(destinations, digest).encode(), what="--image-name-tag-with-digest-file"
    )


def write_builder_output(directory: str | os.PathLike[str], destinations: Iterable[str], digest: Digest | str) -> None:
    """``$BUILDER_OUTPUT/images``: one JSON object per line, ``{"name", "digest"}``."""
    d = _digest_text(digest)
    lines = []
    for dest in destinations:
        repo, tag = _ggcr_repository(dest)
        lines.append(json.dumps({"name": f"{repo}:{tag}", "digest": d}) + "\n")
    atomic_write(Path(directory) / "images", "".join(lines).encode(), what="BUILDER_OUTPUT images file")
