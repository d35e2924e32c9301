"""fs/tarwriter.py writes the bytes Python's tarfile writes, for generated entries and trees.

The oracle is tarfile itself, used the way fs/layer.py used it before it built headers itself
(tests/tarfile_layer.py: a TarInfo per entry, PAX_FORMAT, utf-8 with surrogateescape, empty
uname/gname). Layer digests are cache keys: a changed byte would change every cache key and every
reproducible digest, so equality is checked on the whole blob (digest of the compressed bytes and
diff_id) for every compression.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pybuildless.fs import tarwriter as tw
from pybuildless.fs.changes import Changes
from pybuildless.fs.layer import layer_entries, write_layer
from tests.tarfile_layer import layer_entries_before, new_tarfile, tarinfo, write_with_tarfile

ROOT = os.geteuid() == 0
TYPES = [tw.REGTYPE, tw.LNKTYPE, tw.SYMTYPE, tw.CHRTYPE, tw.BLKTYPE, tw.DIRTYPE, tw.FIFOTYPE]
LIMIT_ID, LIMIT_BIG = 8 ** 7, 8 ** 11  # tarfile's bounds of the 8- and 12-byte fields

# names as the filesystem gives them: bytes (ASCII mostly, some UTF-8, some invalid) decoded with
# surrogateescape; and any text without lone surrogates
fs_names = st.lists(st.one_of(st.sampled_from(b"abz/._-~ "), st.integers(1, 255)), min_size=1, max_size=260) \
    .map(lambda b: os.fsdecode(bytes(b)))
text_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=140)
names = st.one_of(fs_names, text_names, st.integers(95, 260).map(lambda n: "d/" * (n // 4) + "f" * (n % 40)))
# numbers around the edges of the ustar fields, and far beyond them
def around(limit):
    return st.one_of(st.integers(0, 3), st.integers(limit - 2, limit + 1), st.integers(0, 2 ** 40))


xattr_names = st.sampled_from(["security.capability", "user.a", "user.b", "user.\u00e9t\u00e9",
                               "user.pybuildless.owner", "user." + "x" * 120])
xattrs = st.dictionaries(xattr_names, st.binary(max_size=40), max_size=3).map(lambda d: tuple(sorted(d.items())))


@st.composite
def entries(draw):
    typeflag = draw(st.sampled_from(TYPES))
    return tw.Entry(
        name=draw(names), typeflag=typeflag, mode=draw(st.integers(0, 0o177777)),
        uid=draw(around(LIMIT_ID)), gid=draw(around(LIMIT_ID)), size=draw(around(LIMIT_BIG)),
        mtime=draw(st.one_of(around(LIMIT_BIG), st.integers(-2 ** 40, -1))),
        linkname=draw(st.one_of(st.just(""), names)) if typeflag in (tw.LNKTYPE, tw.SYMTYPE) else "",
        devmajor=draw(st.integers(0, 4095)), devminor=draw(st.integers(0, 2 ** 20)),
        xattrs=draw(xattrs))


def reference_header(e: tw.Entry) -> bytes:
    info = tarinfo(e.name, typeflag=e.typeflag, mode=e.mode, uid=e.uid, gid=e.gid, size=e.size, mtime=e.mtime,
                   linkname=e.linkname, devmajor=e.devmajor, devminor=e.devminor, xattrs=e.xattrs)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@settings(max_examples=400, deadline=None)
@given(entries())
def test_a_header_is_tarfile_s(e):
    assert tw.header(e) == reference_header(e)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([tw.CHRTYPE, tw.BLKTYPE]), st.sampled_from([(LIMIT_ID, 0), (0, LIMIT_ID), (-1, 0)]))
def test_device_numbers_a_header_cannot_hold_fail_as_in_tarfile(typeflag, numbers):
    e = tw.Entry("dev", typeflag, 0o600, devmajor=numbers[0], devminor=numbers[1])
    with pytest.raises(ValueError, match="^overflow in number field$"):
        reference_header(e)
    with pytest.raises(ValueError, match="^overflow in number field$"):
        tw.header(e)


def test_an_xattr_name_that_is_not_utf8_fails_as_in_tarfile():
    e = tw.Entry("f", xattrs=((os.fsdecode(b"user.\xff"), b"v"),))
    with pytest.raises(UnicodeEncodeError):
        reference_header(e)
    with pytest.raises(UnicodeEncodeError):
        tw.header(e)


def test_known_headers():
    """A few headers checked field by field (POSIX ustar: name at 0, mode at 100, size at 124, chksum
    at 148, typeflag at 156, magic at 257), independently of tarfile's writer."""
    block = tw.header(tw.Entry("a/b", tw.REGTYPE, 0o644, 1, 2, 3, 4))
    assert len(block) == 512
    assert block[:4] == b"a/b\0" and block[100:108] == b"0000644\0" and block[124:136] == b"00000000003\0"
    assert block[156:157] == b"0" and block[257:265] == b"ustar\x0000"
    assert int(block[148:154], 8) == sum(block[:148]) + 8 * 32 + sum(block[156:])
    long = tw.header(tw.Entry("n" * 101, tw.DIRTYPE))
    assert len(long) == 3 * 512 and long[156:157] == b"x"
    assert long[512:1024].rstrip(b"\0") == b"112 path=" + b"n" * 101 + b"/\n", "a directory's name ends in /"
    assert long[1024:1124] == b"n" * 100 and long[1024 + 156:1024 + 157] == b"5"


@st.composite
def streams(draw):
    """Entries with their data; a regular file's size is its data's."""
    out = []
    for e in draw(st.lists(entries(), max_size=12)):
        data = b""
        if e.typeflag == tw.REGTYPE:
            data = draw(st.one_of(st.binary(max_size=1200), st.integers(0, 3 * 512 + 3).map(bytes)))
        out.append((e._replace(size=len(data)), data))
    return out


class _Collect:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.writes = 0

    def write(self, data) -> int:
        self.writes += 1
        return self.buf.write(data)

    def tell(self) -> int:
        return self.buf.tell()


@settings(max_examples=100, deadline=None)
@given(streams(), st.sampled_from([1, 600, 4096, 1 << 20]), st.booleans())
def test_a_stream_is_tarfile_s_however_it_is_flushed(items, flush_at, streamed):
    ref = _Collect()
    tar = new_tarfile(ref)
    for e, data in items:
        tar.addfile(tarinfo(e.name, typeflag=e.typeflag, mode=e.mode, uid=e.uid, gid=e.gid, size=e.size,
                            mtime=e.mtime, linkname=e.linkname, devmajor=e.devmajor, devminor=e.devminor,
                            xattrs=e.xattrs), io.BytesIO(data) if e.typeflag == tw.REGTYPE else None)
    tar.close()
    got = _Collect()
    stream = tw.TarStream(got)
    stream.FLUSH_AT = flush_at
    for e, data in items:
        if streamed and data:
            stream.add_streamed(e, [data[i:i + 500] for i in range(0, len(data), 500)])
        else:
            stream.add(e, data)
    assert stream.offset == sum(len(tw.header(e)) + len(d) + -len(d) % 512 for e, d in items)
    stream.close()
    assert got.buf.getvalue() == ref.buf.getvalue()
    assert stream.offset == len(ref.buf.getvalue()) and stream.offset % 10240 == 0
    if flush_at == 1 << 20 and not streamed:
        assert got.writes == 1, "small layers go to the compressor in one piece"


# --- whole trees: write_layer against tarfile, as the layer writer used it before ---

component = st.one_of(
    st.text("abcxyz-_.", min_size=1, max_size=12),
    st.lists(st.integers(1, 255).filter(lambda b: b != 0x2F), min_size=1, max_size=20).map(bytes).map(os.fsdecode),
    st.integers(100, 255).map(lambda n: "L" * n),  # long names: paths past 100 bytes
    st.sampled_from(["caf\u00e9", ".wh.x", "z"]),
).filter(lambda c: c not in (".", ".."))
KINDS = ["file", "file", "file", "dir", "symlink", "hardlink", "sparse", "fifo"] + (["chr", "blk"] if ROOT else [])
mtimes_ns = st.one_of(
    st.integers(0, 2 ** 31) .map(lambda s: s * 10 ** 9),
    st.integers(0, 2 ** 33 * 10 ** 9),  # sub-second
    st.integers(-(2 ** 31) * 10 ** 9, -1),  # before 1970
    st.integers(LIMIT_BIG - 2, LIMIT_BIG + 2 ** 20).map(lambda s: s * 10 ** 9 + 500_000_000),  # past the field
)
owner_ids = st.one_of(st.integers(0, 70000), st.integers(LIMIT_ID - 1, LIMIT_ID + 1), st.integers(0, 2 ** 32 - 2))
CAPABILITY = b"\x01\x00\x00\x02" + b"\x20\x00\x00\x00" + b"\x00" * 12  # v2: cap_net_bind_service permitted


@st.composite
def node_specs(draw):
    kind = draw(st.sampled_from(KINDS))
    spec = {"kind": kind, "name": draw(component), "mode": draw(st.integers(0, 0o7777)), "mtime": draw(mtimes_ns)}
    if ROOT:
        spec["owner"] = (draw(owner_ids), draw(owner_ids))
    if kind in ("file", "sparse", "dir"):
        spec["xattrs"] = draw(st.dictionaries(st.sampled_from(["user.a", "user.\u00e9", "user.pybuildless.owner"]),
                                              st.one_of(st.binary(max_size=30), st.sampled_from([b"7:8", b"x:1"])),
                                              max_size=2))
        if kind != "dir" and ROOT and draw(st.booleans()):
            spec["xattrs"]["security.capability"] = CAPABILITY
    if kind == "file":
        spec["data"] = draw(st.binary(max_size=2000))
    elif kind == "sparse":
        spec["size"] = draw(st.integers((1 << 20) - 3, 3 << 20))
        spec["data"] = draw(st.binary(min_size=1, max_size=100))
    elif kind == "symlink":
        spec["target"] = draw(st.one_of(component, st.integers(100, 300).map(lambda n: "/t" * (n // 2))))
    elif kind in ("chr", "blk"):
        spec["dev"] = (draw(st.integers(0, 4095)), draw(st.integers(0, 2 ** 20 - 1)))
    if kind == "dir":
        spec["children"] = draw(st.lists(node_specs(), max_size=4))
    return spec


def make(root: str, spec: dict, made: list[str], parent: str = "") -> None:
    """Create ``spec`` under root/parent; ``made`` gets the relative path of each entry created."""
    rel = f"{parent}/{spec['name']}" if parent else spec["name"]
    path = os.path.join(root, rel)
    if os.path.lexists(path) or len(os.fsencode(path)) > 3500:
        return
    kind = spec["kind"]
    if kind == "file":
        with open(path, "wb") as f:
            f.write(spec["data"])
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(spec["size"])
            f.seek(spec["size"] // 2)
            f.write(spec["data"])
    elif kind == "dir":
        os.mkdir(path)
        for child in spec["children"]:
            make(root, child, made, rel)
    elif kind == "symlink":
        os.symlink(spec["target"], path)
    elif kind == "hardlink":
        files = [r for r in made if stat.S_ISREG(os.lstat(os.path.join(root, r)).st_mode)]
        if not files:
            return
        os.link(os.path.join(root, files[0]), path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, (stat.S_IFCHR if kind == "chr" else stat.S_IFBLK) | 0o600, os.makedev(*spec["dev"]))
    for name, value in spec.get("xattrs", {}).items():
        os.setxattr(path, name, value, follow_symlinks=False)
    if "owner" in spec:
        os.chown(path, *spec["owner"], follow_symlinks=False)
    if kind not in ("symlink", "hardlink"):
        # after chown, which clears set-id bits; without root, keep what the writers must read
        os.chmod(path, spec["mode"] if ROOT else spec["mode"] | 0o700)
    made.append(rel)


def set_mtimes(root: str, specs: list, rel: str = "") -> None:
    """Children first: creating an entry changes its directory's mtime."""
    for spec in specs:
        path = os.path.join(root, rel, spec["name"])
        if spec["kind"] == "dir" and os.path.isdir(path) and not os.path.islink(path):
            set_mtimes(root, spec["children"], os.path.join(rel, spec["name"]))
        if os.path.lexists(path):
            os.utime(path, ns=(spec["mtime"], spec["mtime"]), follow_symlinks=False)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(node_specs(), min_size=1, max_size=8), st.lists(component, max_size=3),
       st.one_of(st.none(), st.integers(0, 2 ** 34)), st.sampled_from(["gzip", "zstd", "none"]), st.data())
def test_a_layer_of_a_tree_is_tarfile_s(specs, deleted, clamp, compression, data):
    with tempfile.TemporaryDirectory(prefix="tarwriter-") as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        made: list[str] = []
        for spec in specs:
            make(root, spec, made)
        assume(made)
        set_mtimes(root, specs)
        dirs = [r for r in made if os.path.isdir(os.path.join(root, r)) and not os.path.islink(os.path.join(root, r))]
        opaque = tuple(data.draw(st.lists(st.sampled_from(dirs), unique=True, max_size=2))) if dirs else ()
        changes = Changes(added=tuple(made), deleted=tuple(d for d in deleted if d not in made), opaque=opaque)
        assert layer_entries(changes) == layer_entries_before(changes)
        layer = write_layer(root, changes, os.path.join(tmp, "out"), compression=compression, clamp_mtime=clamp)
        with open(os.path.join(tmp, "ref"), "wb") as out:
            ref = write_with_tarfile(root, changes, out, compression=compression, clamp_mtime=clamp)
        assert (layer.digest, layer.diff_id, layer.size) == (ref.digest, ref.diff_id, ref.size)
        with open(layer.path, "rb") as a, open(os.path.join(tmp, "ref"), "rb") as b:
            assert a.read() == b.read()


def test_a_multi_megabyte_layer_is_tarfile_s_for_every_compression(tmp_path):
    """Several MiB of mixed files: the 1 MiB pieces handed to the compressor fall elsewhere than
    tarfile's writes, and zstd's and gzip's output must not depend on that."""
    import random
    rng = random.Random(16)
    root = tmp_path / "root"
    root.mkdir()
    for i in range(400):
        size = rng.choice([0, 10, 511, 512, 513, 4000, 70_000, (1 << 20) + 1])
        (root / f"f{i:03d}").write_bytes(rng.randbytes(size // 2) + bytes(size - size // 2))
    changes = Changes(added=tuple(p.name for p in root.iterdir()))
    for compression in ("gzip", "zstd", "none"):
        layer = write_layer(root, changes, tmp_path / compression, compression=compression)
        with open(tmp_path / f"ref-{compression}", "wb") as out:
            ref = write_with_tarfile(str(root), changes, out, compression=compression)
        assert (layer.digest, layer.diff_id) == (ref.digest, ref.diff_id), compression


# --- the edges, deterministically (found by mutation testing) ---

@pytest.mark.parametrize("typeflag", TYPES)
def test_an_entry_s_defaults_are_a_bare_tarinfo_s(typeflag):
    """Entry(name, type) stands for a TarInfo with only the name, type, mode 0 and empty owner
    names set, as whiteouts are written (tarfile's own defaults for the rest)."""
    info = tarfile.TarInfo("x")
    info.type, info.mode, info.uname, info.gname = typeflag, 0, "", ""
    assert tw.header(tw.Entry("x", typeflag)) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


EDGES = [tw.Entry(n, t, 0o755, uid=u, gid=g, size=s, mtime=m, linkname=k)
         for n, k in [("a" * 99, "b" * 99), ("a" * 100, "b" * 100), ("a" * 101, "b" * 101), ("\u00e9", "\u00e9" * 101),
                      (os.fsdecode(b"\xff" * 120), os.fsdecode(b"x\xfe"))]
         for t in (tw.REGTYPE, tw.SYMTYPE, tw.DIRTYPE)
         for u, g, s, m in [(LIMIT_ID - 1, LIMIT_ID, LIMIT_BIG - 1, LIMIT_BIG), (LIMIT_ID, LIMIT_ID - 1, LIMIT_BIG, -1),
                            (-1, 0, 0, LIMIT_BIG - 1), (0, -1, 0, 0)]]
# pax records whose length gains a digit from its own digits: "NN SCHILY.xattr.user.a=VALUE\n" of 97-101 bytes
# and "NNNN path=NAME\n" around 1000
EDGES += [tw.Entry("f", xattrs=(("user.a", b"v" * n),)) for n in range(70, 81)]
EDGES += [tw.Entry("p" * n) for n in range(985, 1000)]
EDGES += [tw.Entry("f", xattrs=(("user.a", b"\xff" * n), ("user.b", b"ok"))) for n in (1, 76, 77)]


@pytest.mark.parametrize("e", EDGES, ids=range(len(EDGES)))
def test_a_header_at_the_edges_of_its_fields_is_tarfile_s(e):
    assert tw.header(e) == reference_header(e)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "a-x", "b", "+", ".wh.a", ".wh..wh..opq", "a.b", "\x01", "z\x02.wh.q"]),
                         min_size=1, max_size=4).map("/".join), max_size=12),
       st.lists(st.lists(st.sampled_from(["a", "b", "c-d", "\x01"]), min_size=1, max_size=3).map("/".join), max_size=4))
def test_entries_come_in_the_order_they_always_had(paths, deleted):
    """Parents before children, whiteouts before their siblings, component by component."""
    changes = Changes(added=tuple(paths), deleted=tuple(deleted), opaque=tuple(paths[:1]))
    assert layer_entries(changes) == layer_entries_before(changes)


def test_the_compressor_gets_pieces_of_about_a_mib():
    """Small entries are batched, but the batch stays near FLUSH_AT: memory is bounded by it."""
    got = _Collect()
    sizes = []
    got.write = lambda data: sizes.append(len(data))
    stream = tw.TarStream(got)
    for i in range(3000):
        stream.add(tw.Entry(f"f{i}", size=1000), b"x" * 1000)
    stream.close()
    assert len(sizes) >= 5 and all(s < (1 << 20) + 2048 for s in sizes), sizes
    assert sum(sizes) == stream.offset


def test_the_owner_field_cache_stays_bounded():
    sizes = set()
    for uid in range(5000):
        tw.header(tw.Entry("f", uid=uid))
        sizes.add(len(tw._IDS))
    assert max(sizes) == 4096


def test_a_fixed_tree_of_every_kind_is_tarfile_s(tmp_path):
    """Every kind of entry with xattrs where the kernel allows them, in one layer."""
    root = tmp_path / "root"
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/f").write_bytes(b"data" * 300)
    for name, value in (("user.b", b"2"), ("user.a", b"1"), ("user.c", b"\xff")):  # listed unsorted
        os.setxattr(root / "dir/f", name, value)
        os.setxattr(root / "dir/sub", name, value)
    os.setxattr(root / "dir", "user.pybuildless.owner", b"7:8")
    os.link(root / "dir/f", root / "dir/hard")
    os.symlink("f", root / "dir/link")
    os.mkfifo(root / "dir/fifo")
    (root / "big").write_bytes(bytes(3 << 20))
    if ROOT:
        os.mknod(root / "dir/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.setxattr(root / "dir/f", "security.capability", CAPABILITY)
    added = tuple(str(p.relative_to(root)) for p in root.rglob("*"))
    changes = Changes(added=added, deleted=("gone", "dir/sub/gone"), opaque=("dir/sub",))
    layer = write_layer(root, changes, tmp_path / "out", compression="none", clamp_mtime=1)
    with open(tmp_path / "ref", "wb") as out:
        ref = write_with_tarfile(str(root), changes, out, compression="none", clamp_mtime=1)
    assert layer.path.read_bytes() == (tmp_path / "ref").read_bytes()
    assert (layer.digest, layer.diff_id) == (ref.digest, ref.diff_id)


@pytest.mark.parametrize("size", [10, (1 << 20) + 10])  # read whole, and streamed in pieces
def test_a_file_that_shrank_after_its_lstat_is_a_clear_error(tmp_path, size):
    from pybuildless.errors import BuildError
    from pybuildless.fs.layer import _add_path
    (tmp_path / "f").write_bytes(b"x" * size)
    st = os.lstat(tmp_path / "f")
    (tmp_path / "f").write_bytes(b"x" * (size - 5))
    dirfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(BuildError, match=r"^/d/f changed size while its layer was being written$"):
            _add_path(tw.TarStream(_Collect()), dirfd, "f", "d/f", st, None, {})
    finally:
        os.close(dirfd)


def test_the_root_is_held_by_an_o_path_fd_no_child_inherits():
    """A RUN of another stage may start while a layer is written: the root's fd must not leak into it."""
    import fcntl
    from pybuildless.fs.layer import _RootView
    with tempfile.TemporaryDirectory() as tmp:
        view = _RootView(tmp)
        try:
            assert not os.get_inheritable(view.rootfd)
            assert fcntl.fcntl(view.rootfd, fcntl.F_GETFL) & os.O_PATH
        finally:
            view.close()


def test_an_entry_whose_parent_is_gone_is_never_looked_up_elsewhere(tmp_path, monkeypatch):
    """Not in the working directory either (a relative lookup without its parent's fd)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "d").symlink_to(tmp_path / "elsewhere")  # not a directory of the tree any more
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_text("the working directory's")
    layer = write_layer(root, Changes(added=("d/secret",)), tmp_path / "out", compression="none")
    with tarfile.open(layer.path) as t:
        assert [(m.name, m.type) for m in t] == [("d", tarfile.SYMTYPE)]


def test_a_root_that_is_not_a_directory_is_an_error_not_an_empty_layer(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        write_layer(tmp_path / "file", Changes(added=("x",)), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
