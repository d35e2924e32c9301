"""The fast tar reading of the extractor (fs/tarread.py) against tarfile itself, and the helper
threads of fresh-mode extraction (fs/extractpool.py, fs/extractdirs.py).

tarfile's own ``TarInfo.frombuf`` is the reference: for every header, valid or damaged, the fast
parser must give the same member or raise the same error."""

from __future__ import annotations

import errno
import io
import os
import random
import tarfile
import threading

import pytest

from pybuildless.fs.extract import LayerFormatError, extract_layer
from pybuildless.fs.extractpool import JobFailed, ReadAhead, WriterPool
from pybuildless.fs.tarread import FastTarInfo, TarStream

ATTRS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
         "devmajor", "devminor", "pax_headers", "offset", "offset_data", "sparse")


def _archive(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        def add(name, kind=tarfile.REGTYPE, data=b"", **kw):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            for k, v in kw.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("etc", tarfile.DIRTYPE, mode=0o755, mtime=1_700_000_000)
        add("etc/passwd", data=b"root:x:0:0\n", mode=0o644, uid=0, gid=0, uname="root", gname="root")
        add("usr/" + "long" * 40 + "/file", data=b"x" * 700, uid=1000, gid=1000, mode=0o4755)
        add("bin", tarfile.SYMTYPE, linkname="usr/bin")
        add("hard", tarfile.LNKTYPE, linkname="etc/passwd")
        add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add("big-ids", data=b"y", uid=2 ** 21 + 5, gid=3, mtime=2 ** 34)  # base-256 in gnu, pax otherwise
        add("pipe", tarfile.FIFOTYPE)
    return out.getvalue()


def _members(raw: bytes, cls) -> list:
    """Each member's attributes, or the error that stopped the reading."""
    got = []
    try:
        tar = tarfile.TarFile(fileobj=io.BytesIO(raw), tarinfo=cls, errors="surrogateescape")
        for m in tar:
            got.append(tuple(getattr(m, a, None) for a in ATTRS))
    except Exception as e:  # noqa: BLE001 - compared with the reference's
        got.append((type(e), str(e)))
    return got


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_fast_parser_reads_every_format_as_tarfile_does(fmt):
    if fmt == tarfile.USTAR_FORMAT:
        with pytest.raises(ValueError):
            _archive(fmt)  # ids past 8 octal digits: ustar cannot hold them
        return
    raw = _archive(fmt)
    want = _members(raw, tarfile.TarInfo)
    assert len(want) == 8 and all(len(m) == len(ATTRS) for m in want)
    assert _members(raw, FastTarInfo) == want


def test_damaged_headers_give_what_tarfile_gives():
    """Random bytes changed in the headers: a bad checksum, garbage numbers, a signed sum..."""
    raw = bytearray(_archive(tarfile.GNU_FORMAT))
    rng = random.Random(16)
    differing = 0
    for _ in range(400):
        damaged = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            block = rng.randrange(len(damaged) // 512) * 512
            damaged[block + rng.randrange(512)] = rng.randrange(256)
        if rng.random() < 0.5:  # a checksum that matches the damage, so the parsing goes further
            block = 0
            header = damaged[block:block + 512]
            header[148:156] = b"        "
            header[148:156] = b"%06o\0 " % sum(header)
            damaged[block:block + 512] = header
        want = _members(bytes(damaged), tarfile.TarInfo)
        assert _members(bytes(damaged), FastTarInfo) == want
        differing += want != _members(bytes(raw), tarfile.TarInfo)
    assert differing > 100  # the damage did reach the parsing


def test_signed_checksums_and_v7_directories_take_tarfile_s_path():
    info = tarfile.TarInfo("old-dir/")
    info.type = tarfile.AREGTYPE
    header = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    header[257:265] = b"\0" * 8  # no magic: a v7 header
    header[0] = 0xE9  # a byte whose signed and unsigned sums differ
    header[148:156] = b"        "
    signed = sum(b - 256 if b > 127 else b for b in header)
    header[148:156] = b"%06o\0 " % (signed & 0o777777) if signed >= 0 else b"-%05o\0 " % -signed
    for cls in (tarfile.TarInfo, FastTarInfo):
        got = cls.frombuf(bytes(header), "utf-8", "surrogateescape")
        assert (got.name, got.type) == ("\udce9ld-dir", tarfile.DIRTYPE)


def test_the_stream_reads_exact_sizes_across_pieces_and_only_skips_ahead():
    data = bytes(range(256)) * 40
    stream = TarStream(io.BytesIO(data), 1000)
    assert stream.read(10) == data[:10] and stream.tell() == 10
    assert stream.read(2500) == data[10:2510]
    assert stream.seek(4000) == 4000 and stream.read(3) == data[4000:4003]
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(10)
    assert stream.read(20_000) == data[4003:] and stream.read(5) == b""
    assert stream.seek(99_999) == len(data)


def test_read_ahead_gives_the_bytes_in_order_and_raises_the_source_s_error_where_it_came():
    class Failing(io.RawIOBase):
        def __init__(self):
            self.left = 3

        def read(self, n=-1):
            if not self.left:
                raise OSError(5, "Input/output error")
            self.left -= 1
            return bytes([self.left]) * 100

    ahead = ReadAhead(Failing(), 100, 2)
    assert ahead.read(150) == b"\2" * 100  # the next piece, whatever the size asked
    stream = TarStream(ahead, 100)
    assert stream.read(60) == b"\1" * 60
    assert stream.read(140) == b"\1" * 40 + b"\0" * 100
    with pytest.raises(OSError, match="Input/output error"):
        stream.read(10)
    assert ahead.read(10) == b""  # the error ended the stream
    ahead.close()
    finished = ReadAhead(io.BytesIO(b"abc"), 2, 1)
    assert [finished.read(), finished.read(), finished.read(), finished.read()] == [b"ab", b"c", b"", b""]
    finished.close()

    endless = ReadAhead(io.BytesIO(b"z" * 10_000), 10, 2)  # a queue kept full: close still stops it
    assert endless.read() == b"z" * 10
    endless.close()
    assert not endless._thread.is_alive()


def test_the_pool_runs_one_key_in_order_and_reports_the_first_failure():
    seen: list[int] = []
    lock = threading.Lock()

    def job(i):
        with lock:
            seen.append(i)

    pool = WriterPool(3, 1 << 20, 4)
    for i in range(50):
        pool.submit(7, f"e{i}", 10, job, i)
    pool.drain()
    assert seen == list(range(50))

    def boom(name):
        raise OSError(28, "No space left on device", name)

    pool.submit(1, "first", 0, boom, "first")
    with pytest.raises(JobFailed) as failed:
        pool.drain()
    assert failed.value.name == "first" and failed.value.error.errno == 28
    with pytest.raises(JobFailed):
        pool.submit(1, "later", 0, job, 99)
    pool.close()
    assert 99 not in seen


def _tar(*entries) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 1000
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload.decode()
                tar.addfile(info)
    return out.getvalue()


def test_fresh_mode_never_writes_through_a_symlink_the_layer_planted(tmp_path):
    """Files go to the pool; a later entry below the layer's own symlink must wait for it and be
    resolved inside the root, never outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    files = [(f"d/f{i}", tarfile.REGTYPE, b"x" * i) for i in range(300)]
    raw = _tar(*files, ("d/link", tarfile.SYMTYPE, str(outside).encode()), ("d/link/evil", tarfile.REGTYPE, b"e"))
    extract_layer(io.BytesIO(raw), root)
    assert os.listdir(outside) == []
    assert (root / str(outside).lstrip("/") / "evil").read_bytes() == b"e"  # resolved as if chrooted
    assert all((root / f"d/f{i}").stat().st_size == i for i in range(300))


def test_fresh_mode_replaces_an_entry_written_earlier_in_the_same_layer(tmp_path):
    raw = _tar(*[(f"a/f{i}", tarfile.REGTYPE, b"1") for i in range(50)], ("a/f7", tarfile.REGTYPE, b"second"),
               ("a", tarfile.SYMTYPE, b"elsewhere"), ("b/x", tarfile.REGTYPE, b"y"),
               ("b/h", tarfile.LNKTYPE, b"b/x"))
    extract_layer(io.BytesIO(raw), tmp_path)
    assert os.readlink(tmp_path / "a") == "elsewhere"
    assert (tmp_path / "b/h").read_bytes() == b"y" and os.stat(tmp_path / "b/x").st_nlink == 2


def test_a_failed_creation_in_the_pool_names_its_entry(tmp_path):
    raw = _tar(("ok", tarfile.REGTYPE, b"1"), ("n" * 300, tarfile.REGTYPE, b"2"), ("after", tarfile.REGTYPE, b"3"))
    with pytest.raises(LayerFormatError, match=r"^cannot apply layer entry 'n{300}': .*File name too long"):
        extract_layer(io.BytesIO(raw), tmp_path)


def test_a_job_bigger_than_the_budget_still_runs_and_abort_drops_what_waits():
    ran: list[int] = []
    pool = WriterPool(1, 10, 4)
    pool.submit(0, "big", 100, ran.append, 1)  # over the budget, in an idle pool: not held back
    pool.drain()
    assert ran == [1]
    gate = threading.Event()
    pool.submit(0, "blocked", 0, gate.wait)
    for i in range(2, 5):
        pool.submit(0, f"e{i}", 1, ran.append, i)
    threading.Timer(0.2, gate.set).start()
    pool.abort()  # waits for the running job, drops the queued ones
    assert ran == [1]


def test_a_truncated_file_in_fresh_mode_is_a_corrupt_layer_named_by_its_entry(tmp_path):
    raw = _tar(("small", tarfile.REGTYPE, b"s"), ("big", tarfile.REGTYPE, b"z" * 100_000))
    with pytest.raises(LayerFormatError, match=r"^corrupt layer at 'big': unexpected end of data$"):
        extract_layer(io.BytesIO(raw[:20_000]), tmp_path)


def test_refused_writes_are_extraction_errors_with_the_entry_and_the_reason():
    from pybuildless.fs.extract import ExtractionError, _failure

    error = _failure(OSError(errno.EACCES, "Permission denied"), "etc/f")
    assert isinstance(error, ExtractionError) and str(error) == "cannot apply layer entry 'etc/f': Permission denied"
    error = _failure(OSError(errno.ENAMETOOLONG, "File name too long"), "n")
    assert isinstance(error, LayerFormatError) and str(error) == "cannot apply layer entry 'n': [Errno 36] File name too long"
    other = ValueError("kept")
    assert _failure(other, "x") is other


def _waits(fn) -> tuple[bool, threading.Thread]:
    """Whether ``fn`` is still blocked after a while (its thread, to join later)."""
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join(0.3)
    return thread.is_alive(), thread


@pytest.mark.parametrize("held, extra, max_bytes, max_jobs, waits", [
    ([8], 5, 10, 4, True),  # over the byte budget
    ([5, 4], 3, 10, 4, True),  # over it with the bytes of every job waiting, not only the last one's
    ([5], 5, 10, 4, False),  # exactly the budget
    ([1, 1], 1, 100, 2, True),  # as many jobs as allowed already wait
    ([1], 1, 100, 2, False),
])
def test_submit_waits_while_the_budget_is_used(held, extra, max_bytes, max_jobs, waits):
    pool = WriterPool(1, max_bytes, max_jobs)
    gate = threading.Event()
    for i, n in enumerate(held):
        pool.submit(0, f"held{i}", n, gate.wait if i == 0 else (lambda: None))
    blocked, thread = _waits(lambda: pool.submit(0, "extra", extra, lambda: None))
    gate.set()
    thread.join()
    pool.drain()
    pool.close()
    assert blocked == waits


# -- headers the common archives above do not have -------------------------------------------

def _ustar_archive() -> bytes:
    """Old and rare header forms, written by tarfile itself in the ustar/GNU layouts: a name split
    into prefix and name (POSIX ustar), v7 regular files and directories (type "\\0"), names that
    are not UTF-8 (read back with surrogateescape), a directory whose name ends in "X"."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT, errors="surrogateescape") as tar:
        def add(name, kind=tarfile.REGTYPE, data=b"", **kw):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            for k, v in kw.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("p" * 90 + "/" + "q" * 60 + "/file", data=b"split")  # 156 characters: prefix + name
        add("v7-file", tarfile.AREGTYPE, data=b"old")
        add("v7-dir/", tarfile.AREGTYPE)
        add("opt/BOX", tarfile.DIRTYPE)
        add("/abs/dir", tarfile.DIRTYPE)  # kept absolute by tarfile (the extractor refuses or strips it later)
        add("caf\udce9", data=b"latin-1 name", uname="\udcffu", gname="g\udce0")
        add("lnk", tarfile.SYMTYPE, linkname="caf\udce9")
        add("r\udce9" * 60 + "/file", data=b"raw prefix")  # 125 bytes: a prefix that is not UTF-8
    return out.getvalue()


def _nul_numbers(raw: bytes) -> bytes:
    """The first header with its uid, gid, devmajor and devminor fields all NULs (no digits at all),
    which tarfile reads as 0, and its checksum made right again."""
    h = bytearray(raw[:512])
    for start in (108, 116, 329, 337):
        h[start:start + 8] = b"\0" * 8
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + raw[512:]


def test_the_fast_parser_reads_prefixes_v7_entries_and_raw_bytes_as_tarfile_does():
    raw = _ustar_archive()
    want = _members(raw, tarfile.TarInfo)
    assert [m[0] for m in want] == ["p" * 90 + "/" + "q" * 60 + "/file", "v7-file", "v7-dir", "opt/BOX", "/abs/dir",
                                    "caf\udce9", "lnk", "r\udce9" * 60 + "/file"]
    assert [m[ATTRS.index("type")] for m in want] == [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE,
                                                      tarfile.DIRTYPE, tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE,
                                                      tarfile.REGTYPE]
    assert raw[345:345 + 90] == b"p" * 90  # the prefix field of the first header is used
    assert _members(raw, FastTarInfo) == want


HEADER_ATTRS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
                "devmajor", "devminor", "_sparse_structs")


def _parsed(cls, block: bytes):
    try:
        got = cls.frombuf(block, "utf-8", "surrogateescape")
    except Exception as e:  # noqa: BLE001 - compared with the reference's
        return type(e), str(e)
    return tuple(getattr(got, a, None) for a in HEADER_ATTRS)


def test_every_block_parsed_alone_gives_what_tarfile_s_parser_gives():
    """frombuf on its own, on every 512-byte block of the archives (headers, data, end blocks): the
    same header values or the same error as tarfile's. (Read through a TarFile, a directory's name
    loses its trailing slashes a second time in tarfile's _proc_builtin, so this is where the fast
    parser's own stripping shows.)"""
    raw = b"".join([_archive(tarfile.PAX_FORMAT), _archive(tarfile.GNU_FORMAT), _ustar_archive(),
                    _nul_numbers(_ustar_archive()), _gnu_sparse_header(b"s", [(0, 1)], 2)])
    parsed = 0
    for at in range(0, len(raw), 512):
        block = raw[at:at + 512]
        want = _parsed(tarfile.TarInfo, block)
        assert _parsed(FastTarInfo, block) == want, at
        parsed += len(want) == len(HEADER_ATTRS)
    assert parsed >= 30  # the headers among the blocks
    assert _parsed(FastTarInfo, b"x" * 100) == _parsed(tarfile.TarInfo, b"x" * 100)  # a short block


def _gnu_sparse_header(name: bytes, pieces: list[tuple[int, int]], realsize: int) -> bytes:
    """An old-GNU sparse header (type "S"), laid out as GNU tar's tar.h declares oldgnu_header:
    sparse[4] (offset, numbytes: 12 octal bytes each) at 386, isextended at 482, realsize at 483;
    magic "ustar  \\0"."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % sum(n for _, n in pieces)  # the data stored: the pieces only
    h[136:148] = b"%011o\0" % 1_700_000_000
    h[156:157] = tarfile.GNUTYPE_SPARSE
    h[257:265] = tarfile.GNU_MAGIC
    for i, (offset, numbytes) in enumerate(pieces):
        h[386 + 24 * i:398 + 24 * i] = b"%011o\0" % offset
        h[398 + 24 * i:410 + 24 * i] = b"%011o\0" % numbytes
    h[483:495] = b"%011o\0" % realsize
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def test_an_old_gnu_sparse_file_is_read_and_extracted_with_its_holes(tmp_path):
    """Its header goes to tarfile's own parser (the fast one does not read sparse maps); the file
    extracted is the realsize with the pieces at their offsets and zeros between."""
    pieces = [(0, 512), (2048, 512), (4096, 512), (6144, 512)]  # all four slots (no end marker to read)
    raw = _gnu_sparse_header(b"holes", pieces, 8192) + b"".join(c * 512 for c in (b"a", b"b", b"c", b"d")) + b"\0" * 1024
    want = _members(raw, tarfile.TarInfo)
    assert want[0][ATTRS.index("sparse")] == pieces and want[0][ATTRS.index("size")] == 8192
    assert _members(raw, FastTarInfo) == want
    extract_layer(io.BytesIO(raw), tmp_path)
    expected = bytearray(8192)
    for (offset, n), c in zip(pieces, b"abcd"):
        expected[offset:offset + n] = bytes([c]) * n
    assert (tmp_path / "holes").read_bytes() == bytes(expected)


def test_ordinary_headers_never_reach_tarfile_s_own_parser(monkeypatch):
    """The fast path is taken for every ordinary header: tarfile's parser only sees the headers the
    fast one leaves to it (base-256 numbers, the zero block that ends the archive)."""
    seen: list[bytes] = []
    original = tarfile.TarInfo.frombuf.__func__

    def counting(cls, buf, encoding, errors):
        seen.append(bytes(buf[:100]).rstrip(b"\0"))
        return original(cls, buf, encoding, errors)

    monkeypatch.setattr(tarfile.TarInfo, "frombuf", classmethod(counting))
    for raw, left_to_tarfile in [
        (_archive(tarfile.PAX_FORMAT), [b""]),  # pax: big numbers are in the pax header
        (_archive(tarfile.GNU_FORMAT), [b"big-ids", b""]),  # gnu: uid and mtime in base-256
        (_ustar_archive(), [b""]),
        (_nul_numbers(_ustar_archive()), [b""]),  # empty numeric fields are ordinary too (tarfile: 0)
    ]:
        seen.clear()
        names = [m.name for m in tarfile.TarFile(fileobj=io.BytesIO(raw), tarinfo=FastTarInfo, errors="surrogateescape")]
        assert len(names) >= 6 and seen == left_to_tarfile
        assert _members(raw, FastTarInfo) == _members(raw, tarfile.TarInfo)


def test_the_stream_reads_its_source_in_pieces_and_seeks_from_the_start():
    sizes: list[int] = []

    class Source(io.BytesIO):
        def read(self, n=-1):
            sizes.append(n)
            return super().read(n)

    data = bytes(range(256)) * 10
    stream = TarStream(Source(data), 300)
    assert stream.seek(5) == 5 and stream.tell() == 5  # a skip before anything was read
    assert stream.read(0) == b"" and stream.read(4) == data[5:9]
    assert stream.seek(9) == 9  # skipping to where it is already: allowed
    assert stream.read(700) == data[9:709] and stream.tell() == 709
    # the texts end up in the layer's error (io.UnsupportedOperation is an OSError): they say why
    with pytest.raises(io.UnsupportedOperation, match="^a layer stream only skips ahead$"):
        stream.seek(0, io.SEEK_END)
    with pytest.raises(io.UnsupportedOperation, match="^a layer stream only skips ahead$"):
        stream.seek(8)
    with pytest.raises(io.UnsupportedOperation, match="^a layer stream is read in sized pieces$"):
        stream.read()
    assert set(sizes) == {300}


# -- the helper threads: what a leaked or stopped one must not do ------------------------------

def test_the_helper_threads_never_keep_the_process_alive():
    """A pool or read-ahead left unclosed (an error path missed) must not hang the interpreter's
    exit: threading waits at exit for every thread that is not a daemon."""
    pool = WriterPool(2, 100, 4)
    ahead = ReadAhead(io.BytesIO(b"abc"), 1, 1)
    try:
        assert len(pool._threads) == 2 and all(t.daemon for t in pool._threads)
        assert ahead._thread.daemon
    finally:
        pool.close()
        ahead.close()


def test_the_pool_gives_back_the_bytes_of_finished_jobs():
    """With jobs done, the whole budget is free again: a job of exactly the budget goes while another
    (of 0 bytes) still runs."""
    pool = WriterPool(1, 10, 8)
    for i in range(3):
        pool.submit(0, f"done{i}", 4, lambda: None)
        pool.drain()
    gate = threading.Event()
    pool.submit(0, "running", 0, gate.wait)
    blocked, thread = _waits(lambda: pool.submit(0, "whole-budget", 10, lambda: None))
    gate.set()
    thread.join()
    pool.drain()
    pool.close()
    assert not blocked


def test_the_first_failure_wins_when_two_jobs_fail_at_once():
    pool = WriterPool(2, 100, 8)
    second_started, first_recorded = threading.Event(), threading.Event()

    def second():
        second_started.set()
        first_recorded.wait(5)
        raise OSError(28, "No space left on device")

    def first():
        second_started.wait(5)
        raise OSError(13, "Permission denied")

    pool.submit(1, "second", 0, second)  # running (past the failure check) when the first fails
    pool.submit(0, "first", 0, first)
    deadline = threading.Event()
    for _ in range(500):
        if pool._failed is not None:
            break
        deadline.wait(0.01)
    first_recorded.set()
    with pytest.raises(JobFailed) as failed:
        pool.drain()
    pool.close()
    assert (failed.value.name, failed.value.error.errno) == ("first", 13)


def test_read_ahead_reads_chunks_and_stays_at_most_depth_pieces_ahead():
    sizes: list[int] = []

    class Endless(io.RawIOBase):
        def read(self, n=-1):
            sizes.append(n)
            return b"e" * 7

    ahead = ReadAhead(Endless(), 7, 3)
    threading.Event().wait(0.3)  # time enough to read far ahead if nothing held it back
    assert 3 <= len(sizes) <= 3 + 1  # the queue's pieces, and one read waiting to be put
    assert ahead.read(1) == b"e" * 7
    ahead.close()  # stops a source that never ends
    assert not ahead._thread.is_alive() and set(sizes) == {7}
