from __future__ import annotations

import gzip
import hashlib
import io
import os

import pytest
import zstandard

from pybuildless.errors import UsageError
from pybuildless.fs.compress import CompressingWriter, HashingReader, open_decompressed, sniff
from pybuildless.image import mediatypes as mt

DATA = os.urandom(200_000) + b"layer" * 300_000


@pytest.mark.parametrize("compression,media_type", [("gzip", mt.OCI_LAYER_GZIP), ("zstd", mt.OCI_LAYER_ZSTD),
                                                    ("none", mt.OCI_LAYER)])
def test_writer_computes_digest_diff_id_and_sizes_in_one_pass(compression, media_type):
    out = io.BytesIO()
    w = CompressingWriter(out, compression)
    for i in range(0, len(DATA), 70_000):
        w.write(DATA[i:i + 70_000])
    info = w.close()
    blob = out.getvalue()
    assert info.digest.hex == hashlib.sha256(blob).hexdigest()
    assert info.size == len(blob)
    assert info.diff_id.hex == hashlib.sha256(DATA).hexdigest()
    assert info.uncompressed_size == len(DATA)
    assert info.media_type == media_type
    assert open_decompressed(io.BytesIO(blob)).read() == DATA
    if compression != "none":
        assert info.size < len(DATA)


def test_gzip_header_is_reproducible():
    blobs = []
    for _ in range(2):
        out = io.BytesIO()
        w = CompressingWriter(out, "gzip")
        w.write(b"same input")
        w.close()
        blobs.append(out.getvalue())
    assert blobs[0] == blobs[1]
    header = blobs[0][:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[3] & 0x08 == 0, "FNAME flag must not be set"
    assert header[4:8] == b"\0\0\0\0", "mtime must be 0"
    assert gzip.decompress(blobs[0]) == b"same input"


def test_sniffing_uses_magic_bytes_not_names():
    assert sniff(io.BytesIO(gzip.compress(b"x")))[0] == "gzip"
    assert sniff(io.BytesIO(zstandard.ZstdCompressor().compress(b"x")))[0] == "zstd"
    kind, stream = sniff(io.BytesIO(b"ab"))
    assert kind == "none" and stream.read() == b"ab"
    assert sniff(io.BytesIO(b""))[0] == "none"


def test_multi_member_gzip_and_multi_frame_zstd_are_read_whole():
    assert open_decompressed(io.BytesIO(gzip.compress(b"ab") + gzip.compress(b"cd"))).read() == b"abcd"
    z = zstandard.ZstdCompressor()
    assert open_decompressed(io.BytesIO(z.compress(b"ab") + z.compress(b"cd"))).read() == b"abcd"


def test_zstd_level_changes_output_and_unknown_compression_is_a_usage_error():
    outs = []
    for level in (1, 19):
        out = io.BytesIO()
        w = CompressingWriter(out, "zstd", level)
        w.write(DATA)
        w.close()
        outs.append(out.getvalue())
    assert outs[0] != outs[1]
    with pytest.raises(UsageError, match="--compression"):
        CompressingWriter(io.BytesIO(), "brotli")


def test_hashing_reader_drains_trailing_bytes():
    r = HashingReader(io.BytesIO(b"tar-data" + b"\0" * 100 + b"trailer"))
    r.read(8)
    r.drain()
    assert r.size == 115
    assert r.digest.hex == hashlib.sha256(b"tar-data" + b"\0" * 100 + b"trailer").hexdigest()


def test_inspect_and_recompress_keep_the_diff_id():
    from pybuildless.fs.compress import inspect_blob, recompress
    gz = gzip.compress(DATA)
    info = inspect_blob(io.BytesIO(gz))
    assert info.compression == "gzip" and info.media_type == mt.OCI_LAYER_GZIP
    assert info.digest.hex == hashlib.sha256(gz).hexdigest() and info.size == len(gz)
    assert info.diff_id.hex == hashlib.sha256(DATA).hexdigest() and info.uncompressed_size == len(DATA)
    out = io.BytesIO()
    z = recompress(io.BytesIO(gz), out, "zstd")
    assert z.diff_id == info.diff_id and z.media_type == mt.OCI_LAYER_ZSTD
    assert inspect_blob(io.BytesIO(out.getvalue())) == z
