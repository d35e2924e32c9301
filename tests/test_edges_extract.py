"""Layer extraction at its edges (found by mutation testing of fs/extract.py and fs/entrymeta.py).

The rules, from independent sources:
- OCI image-spec layer.md (image-spec 13cff54902ec), "Changesets"/"Applying": when an entry and the
  existing path are both directories, the existing path's attributes are replaced by the entry's;
  file attributes carried are mode, uid/gid, mtime, xattrs; hardlinks name a path of the layer.
- containerd archive/tar.go (applyNaive; containerd, read for the rules only): mtimes are set with
  nanosecond precision from the PAX header, directory mtimes after their children, trusted.* xattrs
  are not applied; a hardlink to a directory or outside the root is refused.
- runc/containerd keep device numbers in a 32-bit major/minor (Linux dev_t as glibc makedev packs it).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import tarfile

import pytest

from pybuildless.errors import LayerSecurityError
from pybuildless.fs.extract import ExtractionError, LayerFormatError, extract_layer
from pybuildless.fs.ignore import IgnoreList
from tests.fs_hostile import entry, tar_bytes
from tests.privdrop import as_nobody

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for ownership")


def apply(root, *entries, fmt=tarfile.PAX_FORMAT, **kw):
    return extract_layer(io.BytesIO(tar_bytes(list(entries), fmt)), root, **kw)


# -- the root entry ("./") -------------------------------------------------------------------

@root_only
def test_the_root_entry_sets_the_root_s_mode_owner_and_time(tmp_path):
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    apply(root, entry("./", "dir", mode=0o750, uid=12, gid=34, mtime=1234), entry("./f", "file", b"x"))
    st = os.lstat(root)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o750, 12, 34, 1234 * 10**9)
    assert (root / "f").read_bytes() == b"x"


def test_root_entry_false_leaves_the_root_alone(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(root, 0o711)
    apply(root, entry("./", "dir", mode=0o700), entry("f", "file", b"x"), root_entry=False)
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o711


def test_a_root_entry_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(LayerSecurityError, match=r"layer entry '\./' would replace the root with a non-directory"):
        apply(tmp_path, entry("./", "file", b"x"))


# -- metadata (fs/entrymeta.py) -------------------------------------------------------------

def test_only_image_xattrs_are_applied(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pybuildless.fs.entrymeta")
    pax = {"SCHILY.xattr.user.kept": "v", "SCHILY.xattr.trusted.overlay.opaque": "y",
           "SCHILY.xattr.user.pybuildless.owner": "0:0", "SCHILY.xattr.other.x": "z"}
    apply(tmp_path, entry("f", "file", b"x", pax=pax), entry("d", "dir", pax=pax))
    for name in ("f", "d"):
        assert os.listxattr(tmp_path / name) == ["user.kept"]
        assert os.getxattr(tmp_path / name, "user.kept") == b"v"
    assert "dropping user.pybuildless.owner on f: only the builder itself records it" in caplog.messages
    assert "dropping xattr trusted.overlay.opaque on f" in caplog.messages


def test_an_xattr_the_filesystem_refuses_is_skipped(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pybuildless.fs.entrymeta")
    bad_acl = {"SCHILY.xattr.system.posix_acl_access": "not an acl", "SCHILY.xattr.user.after": "a"}
    apply(tmp_path, entry("f", "file", b"x", pax=bad_acl))
    assert os.getxattr(tmp_path / "f", "user.after") == b"a", "the next xattr is still applied"
    assert any(m.startswith("cannot set xattr system.posix_acl_access on f: [Errno ") for m in caplog.messages)


def test_sub_second_mtimes_are_applied_to_the_nanosecond(tmp_path):
    frac = {"mtime": "1600000000.25"}
    apply(tmp_path, entry("d", "dir", pax=frac), entry("d/f", "file", b"x", pax=frac),
          entry("d/l", "symlink", link="f", pax=frac), entry("d/p", "fifo", pax=frac))
    for name in ("d", "d/f", "d/l", "d/p"):
        assert os.lstat(tmp_path / name).st_mtime_ns == 1_600_000_000_250_000_000, name
    apply(tmp_path, entry("ns", "file", pax={"mtime": "1700000000.123456789"}),
          entry("bad", "file", pax={"mtime": "soon"}))
    assert os.lstat(tmp_path / "ns").st_mtime_ns == 1_700_000_000_123_456_789, "no float rounding"
    assert os.lstat(tmp_path / "bad").st_mtime_ns == 0, "what tarfile makes of an unreadable mtime"


@root_only
def test_special_files_and_symlinks_get_owner_mode_and_time(tmp_path):
    apply(tmp_path, entry("p", "fifo", mode=0o4751, uid=3, gid=4, mtime=777),
          entry("l", "symlink", link="p", uid=5, gid=6, mtime=888))
    p = os.lstat(tmp_path / "p")
    assert (stat.S_IMODE(p.st_mode), p.st_uid, p.st_gid, p.st_mtime) == (0o4751, 3, 4, 777)
    link = os.lstat(tmp_path / "l")
    assert (link.st_uid, link.st_gid, link.st_mtime) == (5, 6, 888)


def test_without_same_owner_entries_keep_the_extracting_user(tmp_path):
    me = (os.geteuid(), os.getegid())
    apply(tmp_path, entry("d", "dir", uid=4321, gid=8765), entry("d/f", "file", b"x", uid=4321, gid=8765),
          entry("d/l", "symlink", link="f", uid=4321, gid=8765), entry("d/p", "fifo", uid=4321, gid=8765),
          entry("./", "dir", uid=4321, gid=8765), same_owner=False)
    for name in ("d", "d/f", "d/l", "d/p", "."):
        st = os.lstat(tmp_path / name)
        assert (st.st_uid, st.st_gid) == me, name


# -- hardlinks ---------------------------------------------------------------------------------

def test_hardlink_rules(tmp_path):
    apply(tmp_path, entry("dir", "dir"), entry("f", "file", b"x"), entry("sym", "symlink", link="f"))
    with pytest.raises(LayerSecurityError, match=r"^h: hardlink to the root$"):
        apply(tmp_path, entry("h", "hardlink", link="./"))
    with pytest.raises(LayerSecurityError, match=r"^h: hardlink to a directory 'dir'$"):
        apply(tmp_path, entry("h", "hardlink", link="dir"))
    with pytest.raises(LayerFormatError, match=r"^h: hardlink target 'nope/x' does not exist in the root$"):
        apply(tmp_path, entry("h", "hardlink", link="nope/x"))
    assert not os.path.lexists(tmp_path / "nope"), "looking for the target creates nothing"
    with pytest.raises(LayerFormatError, match=r"^h: hardlink target 'f/x' does not exist in the root$"):
        apply(tmp_path, entry("h", "hardlink", link="f/x"))
    stats = apply(tmp_path, entry("sub/h", "hardlink", link="sym"), entry("sub/h2", "hardlink", link="f"))
    assert stats.hardlinks == 2
    assert os.lstat(tmp_path / "sub/h").st_ino == os.lstat(tmp_path / "sym").st_ino, "a link to the symlink itself"


def test_a_hardlink_to_a_protected_path_is_refused(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret/key").write_text("k")
    with pytest.raises(LayerSecurityError, match=r"^h: hardlink to a protected path 'secret/key'$"):
        apply(tmp_path, entry("h", "hardlink", link="secret/key"), ignore=IgnoreList.of(["/secret"]))
    assert not os.path.lexists(tmp_path / "h")
    (tmp_path / "open").write_text("o")
    stats = apply(tmp_path, entry("h", "hardlink", link="open"), ignore=IgnoreList.of(["/secret"]))
    assert stats.hardlinks == 1 and os.lstat(tmp_path / "h").st_ino == os.lstat(tmp_path / "open").st_ino


def test_replacing_a_directory_that_holds_protected_paths_is_refused(tmp_path):
    (tmp_path / "var/run/secrets").mkdir(parents=True)
    (tmp_path / "var/run/secrets/token").write_text("t")
    ignore = IgnoreList.of(["/var/run/secrets"])
    with pytest.raises(LayerSecurityError, match=r"^layer replaces /var/run, which holds protected paths$"):
        apply(tmp_path, entry("var/run", "file", b"not a dir"), ignore=ignore)
    assert (tmp_path / "var/run/secrets/token").read_text() == "t"


def test_a_symlink_above_a_protected_path_may_be_replaced(tmp_path):
    """Debian-style /var/run -> /run: a symlink holds nothing, so only the link itself goes."""
    (tmp_path / "var").mkdir()
    (tmp_path / "run").mkdir()
    os.symlink("/run", tmp_path / "var/run")
    apply(tmp_path, entry("var/run", "dir", mode=0o755), entry("var/run/x", "file", b"x"),
          ignore=IgnoreList.of(["/var/run/secrets"]))
    assert (tmp_path / "var/run").is_dir() and not (tmp_path / "var/run").is_symlink()
    assert (tmp_path / "var/run/x").read_bytes() == b"x" and os.listdir(tmp_path / "run") == []


# -- special entries -----------------------------------------------------------------------------

@root_only
@pytest.mark.parametrize("dev", [(2**32, 0), (0, 2**32), (-1, 0), (0, -1)])
def test_device_numbers_outside_32_bits_are_refused(tmp_path, dev):
    with pytest.raises(LayerFormatError, match=r"^null: device numbers out of range$"):
        apply(tmp_path, entry("null", "chr", dev=dev), fmt=tarfile.GNU_FORMAT)


@root_only
def test_block_and_char_devices_keep_their_kind(tmp_path):
    stats = apply(tmp_path, entry("c", "chr", dev=(1, 5), mode=0o640), entry("b", "blk", dev=(7, 1), mode=0o600))
    c, b = os.lstat(tmp_path / "c"), os.lstat(tmp_path / "b")
    assert stat.S_ISCHR(c.st_mode) and (os.major(c.st_rdev), os.minor(c.st_rdev)) == (1, 5)
    assert stat.S_ISBLK(b.st_mode) and (os.major(b.st_rdev), os.minor(b.st_rdev)) == (7, 1)
    assert (stat.S_IMODE(c.st_mode), stat.S_IMODE(b.st_mode)) == (0o640, 0o600)
    assert stats.specials == 2


def test_unknown_entry_types_are_skipped_and_counted(tmp_path, caplog):
    odd = tarfile.TarInfo("odd")
    odd.type = b"Z"
    odd2 = tarfile.TarInfo("odd2")
    odd2.type = b"Y"
    stats = apply(tmp_path, odd, entry("f", "file", b"x"), odd2)
    assert not os.path.lexists(tmp_path / "odd") and (tmp_path / "f").read_bytes() == b"x"
    assert (stats.entries, stats.files, stats.skipped) == (3, 1, 2)
    assert "skipping odd: unsupported tar entry type b'Z'" in caplog.messages


def test_every_kind_of_entry_is_counted(tmp_path):
    stats = apply(tmp_path, entry("d", "dir"), entry("d/f", "file", b"x"), entry("d/l", "symlink", link="f"),
                  entry("d/h", "hardlink", link="d/f"), entry("d/p", "fifo"), entry("d/.wh.gone", "file"))
    assert (stats.entries, stats.files, stats.dirs, stats.symlinks, stats.hardlinks, stats.specials,
            stats.whiteouts, stats.skipped) == (6, 1, 1, 1, 1, 1, 1, 0)


# -- directory times ---------------------------------------------------------------------------

def test_lower_directories_the_layer_does_not_carry_keep_their_times(tmp_path):
    apply(tmp_path, entry("lower", "dir", mtime=5000), entry("lower/sub", "dir", mtime=6000),
          entry("lower/sub/old", "file", b"o"), entry("gone", "file", b"g"))
    os.utime(tmp_path, ns=(7000 * 10**9,) * 2)
    apply(tmp_path, entry("lower/sub/new", "file", b"n"), entry("lower/sub/old", "file", b"replaced"),
          entry(".wh.gone", "file"))
    assert os.lstat(tmp_path / "lower").st_mtime == 5000
    assert os.lstat(tmp_path / "lower/sub").st_mtime == 6000
    assert os.lstat(tmp_path).st_mtime == 7000


def test_a_carried_directory_gets_the_layer_s_time_even_when_replaced_later_by_a_file(tmp_path):
    apply(tmp_path, entry("a", "dir", mtime=100), entry("a/x", "file", b"x"), entry("b", "dir", mtime=200),
          entry("b", "file", b"now a file", mtime=300))
    assert os.lstat(tmp_path / "a").st_mtime == 100
    assert (tmp_path / "b").read_bytes() == b"now a file" and os.lstat(tmp_path / "b").st_mtime == 300


# -- errors --------------------------------------------------------------------------------------

def test_errors_name_the_entry(tmp_path):
    with pytest.raises(LayerFormatError, match=r"^cannot apply layer entry 'a{300}': .*File name too long"):
        apply(tmp_path, entry("a" * 300, "file", b"x"))
    raw = tar_bytes([entry("big", "file", b"z" * 100_000)])
    with pytest.raises(LayerFormatError, match=r"^corrupt layer at 'big': "):
        extract_layer(io.BytesIO(raw[:20_000]), tmp_path)
    with pytest.raises(LayerFormatError, match=r"^layer is not a tar archive: "):
        extract_layer(io.BytesIO(b"not a tar" * 200), tmp_path)


def test_a_broken_gzip_checksum_is_a_corrupt_layer_named_where_it_was_found(tmp_path):
    """RFC 1952: the CRC32 in the gzip trailer covers the whole uncompressed stream; tar readers stop
    at the end-of-archive blocks, so a bad trailer after them is only seen when the blob is drained."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    raw = tar_bytes([entry("a", "file", b"x" * 1000)]) + b"\0" * (2 << 20)
    blob = bytearray(gzip.compress(raw, compresslevel=1))
    blob[-8] ^= 0xFF  # the CRC32
    with pytest.raises(LayerFormatError, match=r"^corrupt layer at '\(end of layer\)': CRC check failed"):
        extract_layer(io.BytesIO(bytes(blob)), tmp_path / "one")
    small = bytearray(gzip.compress(tar_bytes([entry("b", "file", b"y")])))
    small[-8] ^= 0xFF
    with pytest.raises(LayerFormatError, match=r"^corrupt layer at '\(header\)': CRC check failed"):
        extract_layer(io.BytesIO(bytes(small)), tmp_path / "two")


def test_a_protected_entry_of_the_root_directory_is_not_replaced(tmp_path):
    (tmp_path / "cache").write_text("host")
    stats = apply(tmp_path, entry("cache", "file", b"image"), ignore=IgnoreList.of(["/cache"]))
    assert (tmp_path / "cache").read_text() == "host" and stats.skipped == 1


def test_extraction_keeps_no_descriptor_open(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    apply(tmp_path, *[entry(f"d/sub/f{i}", "file", b"x") for i in range(50)], entry("d/sub", "dir", mode=0o755))
    assert len(os.listdir("/proc/self/fd")) == before


def test_directories_below_a_replaced_parent_create_nothing_when_their_times_are_set(tmp_path):
    apply(tmp_path, entry("a", "dir"), entry("a/b", "dir", mtime=100), entry("z", "dir", mtime=300),
          entry("a", "symlink", link="/made/up"))
    assert not os.path.lexists(tmp_path / "made"), "the symlink's missing target is not created"
    assert os.readlink(tmp_path / "a") == "/made/up"
    assert os.lstat(tmp_path / "z").st_mtime == 300, "a later directory still gets its time"
    apply(tmp_path / "z", entry("x", "dir"), entry("x/y", "dir"), entry("w", "dir", mtime=400),
          entry("x", "file", b"now a file"))
    assert os.lstat(tmp_path / "z/w").st_mtime == 400


def test_non_utf8_names_are_extracted_byte_for_byte(tmp_path):
    name = os.fsdecode(b"caf\xe9")
    for fmt in (tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT):
        info = tarfile.TarInfo(name)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as t:
            t.addfile(info, io.BytesIO(b""))
        root = tmp_path / str(fmt)
        root.mkdir()
        extract_layer(io.BytesIO(buf.getvalue()), root)
        assert os.listdir(os.fsencode(root)) == [b"caf\xe9"]


@root_only
def test_a_root_that_refuses_writes_is_an_extraction_error(tmp_path):
    root = tmp_path / "root"
    root.mkdir(mode=0o755)  # owned by root: nobody may not write into it
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    layer = tar_bytes([entry("f", "file", b"x")])

    def unprivileged() -> int:
        try:
            extract_layer(io.BytesIO(layer), f"/proc/self/fd/{rootfd}")
        except ExtractionError as e:
            return 0 if str(e) == "cannot apply layer entry 'f': Permission denied" else 2
        return 3

    try:
        assert as_nobody(unprivileged) == 0
    finally:
        os.close(rootfd)
    assert os.listdir(root) == []


@root_only
def test_unprivileged_extraction_keeps_read_only_directories_writable_until_the_end(tmp_path):
    """Without CAP_DAC_OVERRIDE a 0o555 directory could not receive its children: its mode is put
    back at the end of the layer, children first (a parent without x would hide them)."""
    (tmp_path / "warm-up").mkdir()
    apply(tmp_path / "warm-up", entry("d", "dir"))  # in process too: the same code, tracked by coverage
    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, 65534, 65534)
    layer = tar_bytes([entry("ro", "dir", mode=0o555), entry("ro/nox", "dir", mode=0o600),
                       entry("ro/nox/sub", "dir", mode=0o500), entry("ro/nox/sub/f", "file", b"x"),
                       entry("open", "dir", mode=0o750)])
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)

    def unprivileged() -> int:
        extract_layer(io.BytesIO(layer), f"/proc/self/fd/{rootfd}")
        return 0

    try:
        assert as_nobody(unprivileged) == 0
    finally:
        os.close(rootfd)
    modes = {name: stat.S_IMODE(os.lstat(root / name).st_mode) for name in ("ro", "ro/nox", "ro/nox/sub", "open")}
    assert modes == {"ro": 0o555, "ro/nox": 0o600, "ro/nox/sub": 0o500, "open": 0o750}
    assert (root / "ro/nox/sub/f").read_bytes() == b"x"


@root_only
def test_device_numbers_above_63_are_kept(tmp_path):
    """device-mapper (253), or minors past 255: any 32-bit number is a device number."""
    stats = apply(tmp_path, entry("dm", "blk", dev=(253, 300)), entry("big", "chr", dev=(511, 70000)))
    dm, big = os.lstat(tmp_path / "dm"), os.lstat(tmp_path / "big")
    assert (os.major(dm.st_rdev), os.minor(dm.st_rdev)) == (253, 300)
    assert (os.major(big.st_rdev), os.minor(big.st_rdev)) == (511, 70000)
    assert stats.specials == 2


def test_skips_and_symlinks_are_counted_one_by_one_and_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pybuildless.fs.extract")
    (tmp_path / "keep").mkdir()
    stats = apply(tmp_path, entry("null", "chr", dev=(1, 3)), entry("zero", "chr", dev=(1, 5)),
                  entry("keep/a", "file", b"a"), entry("keep/b", "file", b"b"),
                  entry("l1", "symlink", link="x"), entry("l2", "symlink", link="y"),
                  allow_devices=False, ignore=IgnoreList.of(["/keep"]))
    assert (stats.skipped, stats.symlinks) == (4, 2)
    assert "skipping device node null (needs root)" in caplog.messages
    assert "not extracting ignored path /keep/a" in caplog.messages


def test_a_whiteout_of_a_grandparent_written_by_the_same_layer_keeps_that_layer_s_entries(tmp_path):
    """OCI image-spec layer.md: "Files that are present in the same layer as a whiteout file can only
    be hidden by whiteout files in subsequent layers"."""
    apply(tmp_path, entry("a/old", "file", b"lower"))
    apply(tmp_path, entry("a/b/c", "file", b"same layer"), entry(".wh.a", "file"))
    assert (tmp_path / "a/b/c").read_bytes() == b"same layer"
    assert not (tmp_path / "a/old").exists(), "the lower content is hidden"


@root_only
def test_a_hardlink_entry_s_owner_xattrs_mode_and_time_go_to_the_file_it_names(tmp_path):
    """moby's createTarFile (vendor/github.com/moby/go-archive/archive.go in moby/moby at
    b985e2313a8676e18072b442911fc8f64f17d440): after linking, a TypeLink entry gets Lchown, its
    SCHILY.xattr records, handleLChmod and, its target not being a symlink, Chtimes, all on the
    one inode the two names share."""
    link = entry("h", "hardlink", link="f", uid=3, gid=4, mode=0o600, mtime=1_500_000_000,
                 pax={"SCHILY.xattr.user.via": "link"})
    stats = apply(tmp_path, entry("f", data=b"x", uid=1, gid=2, mode=0o644), link)
    assert stats.hardlinks == 1
    for name in ("f", "h"):
        st = os.lstat(tmp_path / name)
        assert (st.st_nlink, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime) == (
            2, 3, 4, 0o600, 1_500_000_000)
        assert os.getxattr(tmp_path / name, "user.via") == b"link"
