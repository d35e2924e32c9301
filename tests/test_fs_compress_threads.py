"""gzip layers are deflated in a helper thread: the bytes must still depend only on the content."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import threading

import pytest

from pybuildless.fs import compress
from pybuildless.fs.compress import CompressingWriter

# Several deflate blocks plus a tail, half incompressible, half repetitive.
DATA = os.urandom(int(2.5 * compress._GZIP_BLOCK)) + b"layer bytes " * 150_000


def _blob(chunks) -> tuple[bytes, compress.BlobInfo]:
    out = io.BytesIO()
    w = CompressingWriter(out, "gzip")
    for chunk in chunks:
        w.write(chunk)
    info = w.close()
    return out.getvalue(), info


def _split(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    parts, i = [], 0
    while i < len(data):
        n = rng.choice([1, 511, 512, 16384, 65536, compress._GZIP_BLOCK + 3, 3 * compress._GZIP_BLOCK])
        parts.append(data[i:i + n])
        i += n
    return parts


def test_blob_bytes_do_not_depend_on_how_writes_were_split():
    whole, info = _blob([DATA])
    for seed in (1, 2, 3):
        split, split_info = _blob(_split(DATA, seed))
        assert split == whole
        assert split_info == info


def test_threaded_blob_is_standard_gzip_with_correct_digests():
    blob, info = _blob(_split(DATA, 7))
    assert gzip.decompress(blob) == DATA
    assert info.digest.hex == hashlib.sha256(blob).hexdigest() and info.size == len(blob)
    assert info.diff_id.hex == hashlib.sha256(DATA).hexdigest() and info.uncompressed_size == len(DATA)
    assert blob[4:8] == b"\0\0\0\0" and blob[3] & 0x08 == 0  # mtime 0, no file name
    assert len(blob) < len(DATA)


def test_empty_stream_is_a_valid_gzip():
    blob, info = _blob([])
    assert gzip.decompress(blob) == b""
    assert info.uncompressed_size == 0


def _helper_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def test_abort_leaves_no_compression_thread_behind():
    before = _helper_threads()
    w = CompressingWriter(io.BytesIO(), "gzip")
    w.write(DATA)
    w.abort()
    w.abort()  # idempotent
    assert _helper_threads() - before == set()


class _FullDisk(io.RawIOBase):
    """Takes the gzip header, then fails like a full disk."""

    def __init__(self) -> None:
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.written >= 10:
            raise OSError(28, "No space left on device")
        self.written += len(data)
        return len(data)


def test_a_write_error_in_the_thread_reaches_the_caller():
    before = _helper_threads()
    w = CompressingWriter(_FullDisk(), "gzip")
    with pytest.raises(OSError, match="No space left"):
        for i in range(0, len(DATA), 65536):
            w.write(DATA[i:i + 65536])
        w.close()
    w.abort()  # what write_layer does on any error
    assert _helper_threads() - before == set()


def test_failed_layer_write_stops_the_thread_and_leaves_no_temp_file(tmp_path):
    from pybuildless.fs.changes import Changes
    from pybuildless.fs.layer import write_layer

    before = _helper_threads()
    # The compressor is started before the root is opened: a missing root fails after it.
    with pytest.raises(FileNotFoundError):
        write_layer(tmp_path / "missing-root", Changes(added=("big",)), tmp_path / "out")
    assert _helper_threads() - before == set()
    assert list((tmp_path / "out").iterdir()) == []
