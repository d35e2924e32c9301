"""The fast extraction path at its edges (found by mutation testing of fs/extractdirs.py,
fs/extractpool.py and fs/tarread.py).

The rules, from independent sources:
- moby's layer unpacking (github.com/moby/go-archive archive.go, vendored in moby/moby at
  b985e2313a8676e18072b442911fc8f64f17d440, vendor/github.com/moby/go-archive/archive.go):
  a parent directory a layer does not carry is made with ``ImpliedDirectoryMode`` = 0o755 and
  chmod'ed again after the mkdir "to guarantee ImpliedDirectoryMode independent of umask";
  diff.go applies layers under ``overrideUmask(0)``.
- The contract of ``Directories.fresh_dir`` (fs/extractdirs.py): in fresh mode (an empty root)
  a directory this layer made is walked one component at a time and a missing parent is made;
  a name this layer used for anything else is never walked through.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from contextlib import contextmanager

import pytest

from pybuildless.fs.extract import extract_layer
from pybuildless.fs.extractdirs import Directories
from pybuildless.fs.ignore import IgnoreList
from tests.privdrop import in_child


def _layer(*entries) -> bytes:
    """A tar of (name, kind, payload-or-mode): files carry bytes, directories an explicit mode."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 1_700_000_000
            if kind == tarfile.REGTYPE:
                info.size = len(extra)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(extra))
            else:
                info.mode = extra
                tar.addfile(info)
    return out.getvalue()


@contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- implied parents -------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o077, 0o000, 0o022])
@pytest.mark.parametrize("fresh", [True, False], ids=["empty-root", "non-empty-root"])
def test_parents_the_layer_does_not_carry_are_0755_whatever_the_umask(tmp_path, mask, fresh):
    """moby's ImpliedDirectoryMode (0o755, chmod'ed after mkdir so the umask cannot change it);
    a directory the layer carries keeps its own mode."""
    if not fresh:
        (tmp_path / "lower").write_bytes(b"")  # a root with something in it: the careful path
    raw = _layer(("a/b/f", tarfile.REGTYPE, b"x"), ("c", tarfile.DIRTYPE, 0o700),
                 ("c/d/g", tarfile.REGTYPE, b"y"))
    with _umask(mask):
        extract_layer(io.BytesIO(raw), tmp_path)
    assert {p: _mode(tmp_path / p) for p in ("a", "a/b", "c", "c/d")} == {
        "a": 0o755, "a/b": 0o755, "c": 0o700, "c/d": 0o755}
    assert _mode(tmp_path / "a/b/f") == 0o644 and (tmp_path / "c/d/g").read_bytes() == b"y"


def test_an_ignored_entry_below_implied_parents_is_skipped_in_an_empty_root(tmp_path):
    """The ignore check of an entry whose parents the fast path made sees their in-root path."""
    raw = _layer(("a/b/keep", tarfile.REGTYPE, b"k"), ("a/b/secret", tarfile.REGTYPE, b"s"),
                 ("c", tarfile.DIRTYPE, 0o755), ("c/secret", tarfile.REGTYPE, b"s"), ("c/keep", tarfile.REGTYPE, b"k"))
    stats = extract_layer(io.BytesIO(raw), tmp_path, ignore=IgnoreList.of(["/a/b/secret", "/c/secret"]))
    assert (tmp_path / "a/b/keep").read_bytes() == b"k" and (tmp_path / "c/keep").read_bytes() == b"k"
    assert not (tmp_path / "a/b/secret").exists() and not (tmp_path / "c/secret").exists()
    assert (stats.files, stats.dirs, stats.skipped) == (2, 1, 2)


def test_files_written_one_after_another_are_counted_one_by_one(tmp_path):
    """A root with something in it: no helper threads, every file is written by the extractor."""
    (tmp_path / "lower").write_bytes(b"")
    raw = _layer(("f1", tarfile.REGTYPE, b"1"), ("f2", tarfile.REGTYPE, b"2"), ("d/f3", tarfile.REGTYPE, b"3"))
    assert extract_layer(io.BytesIO(raw), tmp_path).files == 3


def test_a_directory_entry_keeps_fresh_mode_for_what_follows_it(tmp_path):
    """In an empty root the entries below a directory the layer made go on to the helper threads:
    the extractor has not left fresh mode (which resolving a parent the careful way would need)."""
    from pybuildless.fs.extract import _Applier

    raw = _layer(("d", tarfile.DIRTYPE, 0o750), ("d/f", tarfile.REGTYPE, b"x"), ("d/e", tarfile.DIRTYPE, 0o700),
                 ("d/e/g", tarfile.REGTYPE, b"y"))
    applier = _Applier(tmp_path, IgnoreList.empty(), same_owner=False, allow_devices=False)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                applier.apply(tar, member)
                assert applier.pool is not None, member.name
        assert {"", "d", "d/e"} <= applier.fresh
        applier.finish()
    finally:
        applier.close()
    assert (tmp_path / "d/e/g").read_bytes() == b"y" and _mode(tmp_path / "d") == 0o750


# -- Directories.fresh_dir -------------------------------------------------------------------

class _Dirs(Directories):
    """The directory half of the extractor alone (the extractor adds the entries' paths)."""

    def __init__(self, root, ignore=IgnoreList.empty()) -> None:
        self.ignore = ignore
        self.layer_paths = set()
        self.open_root(root)


def test_fresh_dir_makes_missing_parents_once_and_keeps_their_fds(tmp_path):
    dirs = _Dirs(tmp_path, IgnoreList.of(["/elsewhere"]))  # an ignore list: image paths are computed
    try:
        assert dirs.pool is not None and dirs.fresh == {""}  # an empty root: fresh mode
        first = dirs.fresh_dir("a/b")
        assert first is not None and first[1] == "/a/b"
        assert os.path.samestat(os.stat(first[0]), os.stat(tmp_path / "a/b"))
        assert {"a", "a/b"} <= dirs.fresh
        assert dirs.fresh_dir("a/b") == first  # cached: the same fd, nothing made again
        assert dirs.fresh_dir("a") is not None and dirs.fresh_dir("")[1] == "/"
        assert sorted(os.listdir(tmp_path)) == ["a"] and os.listdir(tmp_path / "a") == ["b"]
    finally:
        dirs.close()


def test_fresh_dir_never_walks_through_a_name_the_layer_used_for_something_else(tmp_path):
    dirs = _Dirs(tmp_path)
    try:
        assert dirs.fresh_dir("d") is not None
        dirs.layer_paths.add("d/link")  # say, a symlink this layer planted (maybe still in the pool)
        assert dirs.fresh_dir("d/link") is None
        assert dirs.fresh_dir("d/link/below") is None
        assert os.listdir(tmp_path / "d") == []  # nothing made in its place or below it
        dirs.layer_paths.add("d")
        assert dirs.fresh_dir("d") is not None  # a directory this layer made stays usable
    finally:
        dirs.close()


def test_a_root_with_anything_in_it_is_not_fresh(tmp_path):
    (tmp_path / ".hidden").mkdir()
    dirs = _Dirs(tmp_path)
    try:
        assert dirs.pool is None and dirs.fresh == set()
    finally:
        dirs.close()


def test_in_place_the_image_path_is_the_machine_s_own_path(tmp_path):
    """In place (root "/", only inside the jail of the in-place builds) there is no fresh mode and a
    directory's image path is its real path. Only read here: the root fd of "/" resolves one path."""
    dirs = _Dirs("/", IgnoreList.of(["/proc"]))
    try:
        assert dirs.in_place and dirs.pool is None and dirs.fresh == set()
        fd, image_path = dirs.parent("etc", create=False)
        assert image_path == os.path.realpath("/etc")
        assert os.path.samestat(os.stat(fd), os.stat("/etc"))
    finally:
        dirs.close()
    dirs = _Dirs(tmp_path, IgnoreList.of(["/proc"]))  # any other root: image paths inside it
    try:
        assert not dirs.in_place and dirs.fresh_dir("")[1] == "/"
    finally:
        dirs.close()


def _in_user_namespace(fn) -> int:
    """``fn()`` in a forked child inside a new user namespace where only root (0 -> 0) is mapped:
    chown to any other id fails with EINVAL there, as for a rootless build. The child's exit code."""
    import ctypes

    def enter() -> None:
        if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:  # CLONE_NEWUSER
            os._exit(77)
        for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)

    return in_child(enter, fn)


@pytest.mark.skipif(os.geteuid() != 0, reason="maps the namespace's root to the real root")
def test_ids_not_mapped_here_are_recorded_in_the_owner_xattr_of_new_entries(tmp_path):
    """A rootless extraction keeps the image's owner of every new file and directory in
    user.pybuildless.owner ("uid:gid", fs/owners.py) when the kernel refuses the chown; in-process,
    as root, the same layer gets the real owners."""
    def layer(root):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, kind in (("d", tarfile.DIRTYPE), ("d/f", tarfile.REGTYPE), ("big", tarfile.REGTYPE)):
                info = tarfile.TarInfo(name)
                info.type, info.uid, info.gid, info.mode = kind, 1234, 5678, 0o755
                data = b"z" * (5 << 20) if name == "big" else b"x"  # big: written by the extractor itself
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        return extract_layer(io.BytesIO(out.getvalue()), root, same_owner=True)

    (tmp_path / "real").mkdir()
    layer(tmp_path / "real")
    for name in ("d", "d/f", "big"):
        st = os.lstat(tmp_path / "real" / name)
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    (tmp_path / "ns").mkdir()
    code = _in_user_namespace(lambda: layer(tmp_path / "ns") and 0)
    if code == 77:
        pytest.fail("no user namespace here: the rootless path cannot be checked")
    assert code == 0
    for name in ("d", "d/f", "big"):
        assert os.getxattr(tmp_path / "ns" / name, "user.pybuildless.owner") == b"1234:5678", name
        assert os.lstat(tmp_path / "ns" / name).st_uid == 0


def test_a_blob_that_fails_at_its_first_read_is_an_extraction_error_naming_the_header(tmp_path):
    class Failing(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            raise OSError(5, "Input/output error")

    from pybuildless.fs.extract import ExtractionError

    with pytest.raises(ExtractionError, match=r"^cannot apply layer entry '\(header\)': Input/output error$"):
        extract_layer(Failing(), tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_diff_id_mismatch_names_both_digests(tmp_path):
    from pybuildless.errors import DigestMismatchError
    from pybuildless.image.descriptor import Digest

    raw = _layer(("f", tarfile.REGTYPE, b"x"))
    actual = "sha256:" + hashlib.sha256(raw).hexdigest()  # an uncompressed layer: its diff_id is its digest
    wrong = Digest.parse("sha256:" + "0" * 64)
    with pytest.raises(DigestMismatchError, match=f"^layer diff_id is {actual}, expected sha256:0{{64}}$"):
        extract_layer(io.BytesIO(raw), tmp_path, expect_diff_id=wrong)


def test_a_symlink_the_helper_threads_cannot_create_names_its_entry(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("s" * 300)
        info.type, info.linkname = tarfile.SYMTYPE, "target"
        tar.addfile(info)
    from pybuildless.fs.extract import LayerFormatError

    with pytest.raises(LayerFormatError, match=r"^cannot apply layer entry 's{300}': .*File name too long"):
        extract_layer(io.BytesIO(out.getvalue()), tmp_path)


@pytest.mark.parametrize("fresh", [True, False], ids=["empty-root", "non-empty-root"])
def test_more_parents_than_the_fd_cache_holds(tmp_path, fresh):
    """Past 256 cached directory fds the cache is emptied (after the helper threads finished the
    jobs that use them): every file still lands in its directory."""
    if not fresh:
        (tmp_path / "lower").write_bytes(b"")
    raw = _layer(*[(f"d{i}/f", tarfile.REGTYPE, b"%d" % i) for i in range(300)])
    assert extract_layer(io.BytesIO(raw), tmp_path).files == 300
    assert all((tmp_path / f"d{i}/f").read_bytes() == b"%d" % i for i in range(300))
