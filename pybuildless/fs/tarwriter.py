"""Tar entries built directly as bytes, the way Python's tarfile writes them.

Layer digests are cache keys and must stay stable, so every byte here is the
byte ``tarfile.TarFile(format=PAX_FORMAT, encoding="utf-8",
errors="surrogateescape")`` writes for a ``TarInfo`` with empty uname/gname
(CPython 3.11 Lib/tarfile.py: create_pax_header, _create_header,
_create_pax_generic_header, addfile, close). tarfile spends most of a layer's
time on per-entry objects (TarInfo copies, dicts, per-field encoders and two
checksums over each block); here a header is a few bytes formattings, and
entries go to the compressor in large batches. tests/test_fs_tarwriter.py
compares the output with tarfile's for generated entries.

The rules carried over from tarfile:
- a ustar header (magic "ustar\\0", version "00") carries the name and link
  name as ASCII with "?" for anything else, cut at 100 bytes; uid and gid in
  7 octal digits, size and mtime in 11; a value that does not fit is written
  as 0 there;
- a pax extended header ("././@PaxHeader", type "x") comes first when there
  are xattrs, when the name or link name is not ASCII or longer than 100
  characters, or when a number does not fit: keys in the order xattrs, path,
  linkpath, uid, gid, size, mtime; "hdrcharset=BINARY" first when a value is
  not valid UTF-8 (the bytes are then written as they are);
- data is padded to 512 bytes; the archive ends with two zero blocks, padded
  to a multiple of 10240 bytes.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

BLOCK = 512
RECORD = BLOCK * 20

REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_PAXTYPE = b"x"
_LIMIT_ID = 8 ** 7  # 8-byte numeric fields: 7 octal digits and a NUL
_LIMIT_BIG = 8 ** 11  # 12-byte fields (size, mtime)
_NAME_LEN = 100
# magic, version, uname and gname (empty)
_OWNER_PART = b"ustar\x0000" + bytes(64)
_OWNER_SUM = sum(_OWNER_PART)
_NO_DEVICE = bytes(16)
_TAIL = bytes(155 + 12)  # prefix (unused by the pax format) and the block's padding
_SPACES_SUM = 8 * ord(" ")  # the checksum is computed with its own field as spaces
_ZEROS = bytes(RECORD)
_IDS: dict[tuple[int, int, int], bytes] = {}  # (mode, uid, gid) -> their three header fields


class Entry(NamedTuple):
    """What a tar header says about one entry; ``xattrs`` are (name, value) in header order.

    A named tuple rather than a dataclass: one is made per file, and a frozen
    dataclass costs ten times as much to construct.
    """

    name: str
    typeflag: bytes = REGTYPE
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


def _ustar(name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           link: bytes = b"", device: bytes = _NO_DEVICE) -> bytes:
    """One header block; ``name`` and ``link`` already ASCII and at most 100 bytes."""
    ids = _IDS.get((mode, uid, gid))
    if ids is None:  # most entries of a layer share their mode and owner
        if len(_IDS) >= 4096:
            _IDS.clear()
        ids = _IDS[(mode, uid, gid)] = b"%07o\x00%07o\x00%07o\x00" % (mode, uid, gid)
    times = b"%011o\x00%011o\x00" % (size, mtime)
    # The checksum is the sum of the block's bytes. adler32's low 16 bits are 1 + the sum of
    # the bytes modulo 65521, and the bytes that vary here add up to 55,000 at most
    # (names 2 x 100 x 255, digits, type), so they give the sum exactly, at C speed.
    varying = zlib.adler32(device, zlib.adler32(link, zlib.adler32(times, zlib.adler32(ids, zlib.adler32(name)))))
    checksum = (varying & 0xFFFF) - 1 + typeflag[0] + _SPACES_SUM + _OWNER_SUM
    return b"".join((
        name.ljust(_NAME_LEN, b"\x00"), ids, times, b"%06o\x00 " % checksum, typeflag,
        link.ljust(_NAME_LEN, b"\x00"), _OWNER_PART, device, _TAIL,
    ))


def _device(major: int, minor: int) -> bytes:
    if not (0 <= major < _LIMIT_ID and 0 <= minor < _LIMIT_ID):
        raise ValueError("overflow in number field")  # what tarfile raises: a ustar header has no room
    return b"%07o\x00%07o\x00" % (major, minor)


def _ascii_field(value: str, key: str, pax: dict[str, str]) -> bytes:
    """The header's form of a name; records the pax value when the header cannot hold it."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        pax[key] = value
        return value.encode("ascii", "replace")[:_NAME_LEN]
    if len(raw) > _NAME_LEN:
        pax[key] = value
        return raw[:_NAME_LEN]
    return raw


def _pax_block(pax: dict[str, str]) -> bytes:
    binary = False
    for value in pax.values():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            binary = True  # a name or value that is not UTF-8: its bytes go in as they are
            break
    records = [b"21 hdrcharset=BINARY\n"] if binary else []
    for key, value in pax.items():
        keyword = key.encode("utf-8")
        data = value.encode("utf-8", "surrogateescape") if binary else value.encode("utf-8")
        length = len(keyword) + len(data) + 3  # " ", "=", "\n"
        # the record's length counts its own digits; adding them makes one more digit at most
        total = length + len(str(length))
        total += len(str(total)) - len(str(length))
        records.append(b"%d %s=%s\n" % (total, keyword, data))
    payload = b"".join(records)
    return (_ustar(b"././@PaxHeader", _PAXTYPE, 0, 0, 0, len(payload), 0)
            + payload + bytes(-len(payload) % BLOCK))


def header(e: Entry) -> bytes:
    """The header blocks of ``e`` (a pax extended header first when it needs one)."""
    name, typeflag, mode, uid, gid, size, mtime, linkname, devmajor, devminor, xattrs = e
    if typeflag == DIRTYPE and not name.endswith("/"):
        name += "/"  # a directory's name ends with a slash
    pax: dict[str, str] = {}
    if xattrs:
        for key, value in xattrs:
            pax["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    if name.isascii() and len(name) <= _NAME_LEN:  # the common case, without a pax record
        raw_name = name.encode("ascii")
    else:
        raw_name = _ascii_field(name, "path", pax)
    raw_link = _ascii_field(linkname, "linkpath", pax) if linkname else b""
    if not (0 <= uid < _LIMIT_ID and 0 <= gid < _LIMIT_ID and 0 <= size < _LIMIT_BIG and 0 <= mtime < _LIMIT_BIG):
        if not 0 <= uid < _LIMIT_ID:
            pax["uid"], uid = str(uid), 0
        if not 0 <= gid < _LIMIT_ID:
            pax["gid"], gid = str(gid), 0
        if not 0 <= size < _LIMIT_BIG:
            pax["size"], size = str(size), 0
        if not 0 <= mtime < _LIMIT_BIG:
            pax["mtime"], mtime = str(mtime), 0
    device = _device(devmajor, devminor) if typeflag in (CHRTYPE, BLKTYPE) else _NO_DEVICE
    block = _ustar(raw_name, typeflag, mode & 0o7777, uid, gid, size, mtime, raw_link, device)
    return _pax_block(pax) + block if pax else block


class TarStream:
    """Headers and data appended in memory and handed to ``out.write`` in large pieces.

    ``out`` must be done with the bytes it is given when ``write`` returns (the
    buffer is reused): the CompressingWriter copies or consumes them.
    """

    FLUSH_AT = 1 << 20

    def __init__(self, out) -> None:
        self._out = out
        self._buf = bytearray()
        self._written = 0

    @property
    def offset(self) -> int:
        """Bytes of the archive so far, handed on or not."""
        return self._written + len(self._buf)

    def _flush(self) -> None:
        self._written += len(self._buf)
        self._out.write(self._buf)
        self._buf.clear()

    def add(self, e: Entry, data: bytes = b"") -> None:
        """An entry and (for a regular file) all of its data, which must be ``e.size`` bytes."""
        buf = self._buf
        buf += header(e)
        if data:
            buf += data
            buf += _ZEROS[:-len(data) % BLOCK]
        if len(buf) >= self.FLUSH_AT:
            self._flush()

    def add_streamed(self, e: Entry, chunks) -> None:
        """An entry whose data comes as an iterable of byte strings adding up to ``e.size``."""
        self.add(e)
        self._flush()
        for chunk in chunks:
            self._out.write(chunk)
            self._written += len(chunk)
        self._buf += _ZEROS[:-e.size % BLOCK]

    def close(self) -> None:
        """Two zero blocks, then zeros up to a whole record (as ``tar -b20``)."""
        end = 2 * BLOCK
        self._buf += bytes(end + -(self.offset + end) % RECORD)
        self._flush()
