"""ADD's archive rule: which local files are unpacked, and how.

The reference is BuildKit as Docker 20.10 ships it (BuildKit v0.8, moby/buildkit@eeb7b65ab7d6,
with Docker's own pkg/archive, moby/moby@v20.10.24):

- solver/llbsolver/file/unpack.go, ``isArchivePath``: a regular file (the source path is
  followed first) whose content, once decompressed by ``archive.DecompressStream``, gives a
  first tar header that Go's ``tar.Reader.Next`` accepts. Anything else (gzip of plain text,
  an empty file, a file named ``.tar`` that is not one) is copied unchanged.
- pkg/archive/archive.go ``DetectCompression``: gzip (1f 8b 08), bzip2 (``BZh``) and xz
  (fd ``7zXZ`` 00) by magic; every other stream is read as a plain tar. zstd is not among
  them in Docker 20.10, so a zstd file is never unpacked.
- ``unpack``: the destination is made with ``copy.MkdirAll(dest, 0755, chowner)`` (as a
  missing COPY destination), then ``chrootarchive.Untar`` applies the entries with their own
  owners (``--chown`` does not apply to them); ``Unpack`` skips the ``.`` entry because the
  destination exists, so the archive's root entry never changes the destination.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from typing import BinaryIO

_GZIP = b"\x1f\x8b\x08"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"


def compression_of(head: bytes) -> str:
    """'gzip', 'bzip2', 'xz' or 'none', from the first bytes (DetectCompression)."""
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_BZIP2):
        return "bzip2"
    if head.startswith(_XZ):
        return "xz"
    return "none"


def open_decompressed(path: str) -> BinaryIO:
    with open(path, "rb") as f:
        head = f.read(10)
    kind = compression_of(head)
    if kind == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def is_tar_archive(path: str) -> bool:
    """True when ``path`` (a regular file) decompresses to something with a valid first tar header."""
    try:
        with open_decompressed(path) as stream:
            head = _read_until_error(stream)
    except (OSError, lzma.LZMAError, ValueError):
        return False
    if len(head) < 512:
        return False  # Go's ReadFull of the first block fails
    try:
        # Opening a stream parses the first member's header(s), as tar.Reader.Next does.
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|"):
            return True
    except (tarfile.TarError, EOFError, ValueError):
        return False


def _read_until_error(stream: BinaryIO, limit: int = 64 * 1024) -> bytes:
    """Up to ``limit`` decompressed bytes: what a reader gets before a corrupt stream fails."""
    out = bytearray()
    try:
        while len(out) < limit:
            chunk = stream.read(512)
            if not chunk:
                break
            out += chunk
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        pass
    return bytes(out)
