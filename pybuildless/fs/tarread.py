"""Reading a layer tar quickly, with tarfile's semantics.

tarfile parses each 512-byte header field by field (a find, a slice and a decode per field)
and its stream copies the rest of its buffer after every read; for a layer of a few thousand
small files that parsing costs as much as creating the files. ``TarStream`` reads without
copying more than asked, and ``FastTarInfo`` parses the ordinary header (octal numbers, a
correct unsigned checksum, not old-GNU sparse) in one ``struct`` call, leaving every other
header to tarfile's own ``frombuf``, so both give the same members and the same errors.
"""

from __future__ import annotations

import io
import struct
import tarfile
from typing import BinaryIO

# POSIX ustar header (pax, "ustar Interchange Format"): name, mode, uid, gid, size, mtime,
# chksum, typeflag, linkname, magic, version, uname, gname, devmajor, devminor, prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")
_BASE256 = (0o200, 0o377)


def _octal(field: bytes) -> int:
    """tarfile.nti for an octal field; ValueError for anything else (base-256, garbage)."""
    if field[0] in _BASE256:
        raise ValueError("base-256 number")
    return int(field.partition(b"\0")[0].strip() or b"0", 8)


class FastTarInfo(tarfile.TarInfo):
    """TarInfo whose ``frombuf`` takes a quick path through ordinary headers."""

    __slots__ = ()

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, _magic, _version, uname, gname,
         devmajor, devminor, prefix) = _HEADER.unpack_from(buf)
        try:
            numbers = [_octal(f) for f in (chksum, mode, uid, gid, size, mtime, devmajor, devminor)]
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        # the unsigned sum of the header with its checksum field read as spaces
        if numbers[0] != 256 + sum(buf) - sum(buf[148:156]):
            return super().frombuf(buf, encoding, errors)  # a signed sum, a bad one, an end block
        obj = cls()
        obj.name = name.partition(b"\0")[0].decode(encoding, errors)
        obj.chksum, obj.mode, obj.uid, obj.gid, obj.size, obj.mtime, obj.devmajor, obj.devminor = numbers
        obj.type = kind
        obj.linkname = linkname.partition(b"\0")[0].decode(encoding, errors)
        obj.uname = uname.partition(b"\0")[0].decode(encoding, errors)
        obj.gname = gname.partition(b"\0")[0].decode(encoding, errors)
        if kind == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE  # old V7 form of a directory
        if obj.isdir():
            obj.name = obj.name.rstrip("/")
        prefix = prefix.partition(b"\0")[0]
        if prefix and kind not in tarfile.GNU_TYPES:
            obj.name = prefix.decode(encoding, errors) + "/" + obj.name
        return obj

class TarStream:
    """The forward-only file object tarfile reads a layer through: ``read(n)`` gives exactly ``n``
    bytes (fewer only at the end), ``seek`` only skips ahead.

    tarfile's own stream keeps the rest of its buffer by slicing it after every read, copying up
    to a buffer's worth for each 512-byte header; this one keeps a position in the current piece.
    """

    def __init__(self, source: BinaryIO, piece: int) -> None:
        self._source = source
        self._piece_size = piece
        self._piece = b""
        self._at = 0  # in _piece
        self._pos = 0  # of the stream

    def tell(self) -> int:
        return self._pos

    def _fill(self) -> bool:
        self._piece = self._source.read(self._piece_size)
        self._at = 0
        return bool(self._piece)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise io.UnsupportedOperation("a layer stream is read in sized pieces")
        end = self._at + n
        if end <= len(self._piece):  # the usual case: within the current piece
            data = self._piece[self._at:end]
            self._at = end
            self._pos += n
            return data
        parts = []
        want = n
        while want:
            if self._at >= len(self._piece) and not self._fill():
                break
            part = self._piece[self._at:self._at + want]
            self._at += len(part)
            want -= len(part)
            parts.append(part)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or pos < self._pos:
            raise io.UnsupportedOperation("a layer stream only skips ahead")
        while self._pos < pos:
            step = min(pos - self._pos, len(self._piece) - self._at)
            if step == 0:
                if not self._fill():
                    break
                continue
            self._at += step
            self._pos += step
        return self._pos
