"""Layer blob compression: sniffing, streaming decompression, hashing writers.

The compressed digest (manifest), the diff_id (config) and both sizes are
computed in the same pass as the (de)compression, never by re-reading.
gzip is deflated in a helper thread (isal releases the GIL), so reading and
tarring files overlaps with compressing, hashing and writing the blob.
"""

from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass
from typing import BinaryIO

from isal import igzip, igzip_threaded

from pybuildless.errors import ImageFormatError, UsageError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Digest

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# Deflate block handed to the compression thread. Blocks are cut at fixed offsets of the
# uncompressed stream, so the blob's bytes depend only on its content, never on how the
# caller split its writes.
_GZIP_BLOCK = 1 << 20

MEDIA_TYPES = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front of it."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def sniff(raw: BinaryIO) -> tuple[str, BinaryIO]:
    """('gzip'|'zstd'|'none', a stream that still starts at byte 0)."""
    head = b""
    while len(head) < 4:
        more = raw.read(4 - len(head))
        if not more:
            break
        head += more
    stream = io.BufferedReader(_Prefixed(head, raw), _CHUNK)
    if head.startswith(GZIP_MAGIC):
        return "gzip", stream
    if head.startswith(ZSTD_MAGIC):
        return "zstd", stream
    return "none", stream


def zstd_error() -> type[Exception]:
    """zstandard's error type once a zstd stream was opened (zstandard is loaded for zstd layers
    only); before that no such error can occur, and ImageFormatError stands in."""
    zstandard = sys.modules.get("zstandard")
    return zstandard.ZstdError if zstandard is not None else ImageFormatError


def open_decompressed(raw: BinaryIO, *, threaded: bool = False) -> BinaryIO:
    """The uncompressed tar stream of a layer blob, whatever its compression.

    ``threaded`` inflates gzip in a helper thread (the GIL is released while
    inflating), so decompression overlaps with whatever consumes the stream.
    """
    kind, stream = sniff(raw)
    if kind == "gzip":
        if threaded:
            return igzip_threaded.open(stream, "rb", threads=1)
        return igzip.IGzipFile(fileobj=stream, mode="rb")
    if kind == "zstd":
        import zstandard  # loaded for zstd layers only

        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True, closefd=False)
    return stream


class HashingReader(io.RawIOBase):
    """Counts and sha256-hashes what is read through it (a blob digest, or a diff_id).

    ``limit`` makes reading past that many bytes an error (decompression bombs).
    """

    def __init__(self, inner: BinaryIO, limit: int | None = None) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0
        self.limit = limit

    def _count(self, n: int) -> None:
        self.size += n
        if self.limit is not None and self.size > self.limit:
            raise ImageFormatError(f"layer expands beyond the allowed {self.limit} bytes")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self._hash.update(data)
        self._count(n)
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self._hash.update(data)
        self._count(len(data))
        return data

    def drain(self) -> None:
        """Read to EOF: trailing bytes after the tar end blocks are part of the diff_id."""
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> Digest:
        return Digest("sha256", self._hash.hexdigest())


class _HashingSink:
    """The file the compressor writes into, hashing the compressed bytes."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


@dataclass(frozen=True)
class BlobInfo:
    """A written layer blob: digests and sizes of the compressed and uncompressed bytes."""

    digest: Digest  # of the compressed bytes
    diff_id: Digest  # of the uncompressed bytes
    size: int
    uncompressed_size: int
    media_type: str
    compression: str


def _gzip_level(level: int | None) -> int:
    # isal has levels 0..3; map zlib's 1..9 scale onto it (-1/None = default).
    if level is None or level < 0:
        return 2
    if level <= 1:
        return level
    return 2 if level <= 5 else 3


class _ThreadedGzip:
    """gzip deflated by one isal helper thread, fed fixed-size blocks.

    isal's threaded writer deflates each block with the previous 32 KiB as its
    dictionary, then writes and (through the sink) hashes the output in that
    thread; the header has mtime 0 and no file name.
    """

    def __init__(self, sink: "_HashingSink", level: int) -> None:
        self._file = igzip_threaded.open(sink, "wb", compresslevel=level, threads=1, block_size=_GZIP_BLOCK)
        self._raw = self._file.raw  # bypass the BufferedWriter: its flush points follow the caller's writes
        self._pending = bytearray()

    def write(self, data) -> None:
        self._pending += data
        if len(self._pending) >= _GZIP_BLOCK:
            whole = len(self._pending) - len(self._pending) % _GZIP_BLOCK
            view = memoryview(self._pending)
            try:
                for start in range(0, whole, _GZIP_BLOCK):
                    self._raw.write(view[start:start + _GZIP_BLOCK])
            finally:
                view.release()
            del self._pending[:whole]

    def close(self) -> None:
        try:
            if self._pending:
                self._raw.write(bytes(self._pending))
                self._pending.clear()
        finally:
            self._file.close()  # waits for the thread, writes the trailer; re-raises its errors


class CompressingWriter:
    """Write an uncompressed tar stream; get the compressed blob and its BlobInfo.

    gzip output carries ``mtime=0`` and no file name so identical input gives
    identical bytes.
    """

    def __init__(self, out: BinaryIO, compression: str = "gzip", level: int | None = None) -> None:
        if compression not in MEDIA_TYPES:
            raise UsageError(f"--compression: unknown compression {compression!r} (gzip, zstd or none)")
        self.compression = compression
        self._sink = _HashingSink(out)
        self._diff = hashlib.sha256()
        self._usize = 0
        self._info: BlobInfo | None = None
        if compression == "gzip":
            self._comp = _ThreadedGzip(self._sink, _gzip_level(level))
        elif compression == "zstd":
            import zstandard

            zlevel = 3 if level is None or level < 0 else level
            self._comp = zstandard.ZstdCompressor(level=zlevel, write_checksum=True).stream_writer(
                self._sink, closefd=False
            )
        else:
            self._comp = None

    def write(self, data) -> int:
        self._diff.update(data)
        self._usize += len(data)
        if self._comp is None:
            self._sink.write(data)
        else:
            self._comp.write(data)
        return len(data)

    def tell(self) -> int:
        return self._usize

    def abort(self) -> None:
        """Give up on the blob (the caller discards it): stop the compression thread."""
        if self._info is None and self._comp is not None:
            try:
                self._comp.close()
            except Exception:  # noqa: BLE001 - the blob is being thrown away; the caller's error matters
                pass
            self._comp = None

    def close(self) -> BlobInfo:
        if self._info is None:
            if self._comp is not None:
                if self.compression == "zstd":
                    import zstandard

                    self._comp.flush(zstandard.FLUSH_FRAME)
                self._comp.close()
            self._sink.flush()
            self._info = BlobInfo(
                digest=Digest("sha256", self._sink.hash.hexdigest()),
                diff_id=Digest("sha256", self._diff.hexdigest()),
                size=self._sink.size,
                uncompressed_size=self._usize,
                media_type=MEDIA_TYPES[self.compression],
                compression=self.compression,
            )
        return self._info


def inspect_blob(raw: BinaryIO) -> BlobInfo:
    """Digest, diff_id and sizes of a layer blob, read once (e.g. a local tarball layer)."""
    outer = HashingReader(raw)
    kind, stream = sniff(outer)
    inner = HashingReader(open_decompressed(stream))
    inner.drain()
    outer.drain()
    return BlobInfo(outer.digest, inner.digest, outer.size, inner.size, MEDIA_TYPES[kind], kind)


def recompress(raw: BinaryIO, out: BinaryIO, compression: str = "gzip", level: int | None = None) -> BlobInfo:
    """Write ``raw`` (any compression) to ``out`` with another compression; the diff_id stays."""
    writer = CompressingWriter(out, compression, level)
    src = open_decompressed(raw)
    while chunk := src.read(_CHUNK):
        writer.write(chunk)
    return writer.close()
