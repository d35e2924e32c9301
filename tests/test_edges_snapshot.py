"""Snapshots at their edges (found by mutation testing of fs/snapshot.py).

The rules, from independent sources:
- moby go-archive changes_unix.go statDifferent (moby b985e2313a86,
  vendor/github.com/moby/go-archive/changes_unix.go): a path changed when its mode, uid, gid or
  rdev changed, or, for a non-directory, its size or mtime; a directory whose ctime (or list of
  entries) alone moved is not itself a change; changes.go compares the capability xattr too.
- OCI image-spec layer.md (image-spec 13cff54902ec, "Opaque Whiteout", "Whiteouts"): an opaque
  whiteout hides *every* lower child of its directory, so everything that should exist below a
  recreated directory must be in the layer; whiteouts only name paths of lower layers.
- The module's own contract (its docstring and fs/watch.py): the inotify record only narrows
  where to look, so a watched snapshot reports what a full walk reports.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import stat
import sys

import pytest

from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.snapshot import Snapshotter
from tests.test_fs_snapshot import make_tree, write

LOGGER = "pybuildless.fs.snapshot"


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "root")


@pytest.fixture(params=[True, False], ids=["inotify", "walk"])
def watch(request):
    return request.param


def watched_and_walked(tmp_path, *steps, ignore=None, prepare=None):
    """Run each step (a function of the root) on two equal trees, one snapshotted with inotify and
    one by walking; the Changes after each step must be the same. Returns the list of Changes."""
    results = []
    snaps = []
    for name, watch in (("watched", True), ("walked", False)):
        root = make_tree(tmp_path / name)
        if prepare:
            prepare(root)
        s = Snapshotter(root, ignore, watch=watch)
        s.baseline()
        if watch:
            assert s._watcher is not None, "inotify is available on Linux test machines"
        snaps.append((root, s))
    for step in steps:
        got = []
        for root, s in snaps:
            step(root)
            got.append(s.take())
        assert got[0] == got[1], f"inotify: {got[0]}\nwalk:    {got[1]}"
        results.append(got[1])
    for _, s in snaps:
        s.close()
    return results


# -- construction and lifetime ---------------------------------------------------------------

def _refuse_mode():
    with pytest.raises(ValueError, match=r"^unknown snapshot mode 'fast'$"):
        Snapshotter("/nonexistent", mode="fast")


def test_unknown_mode_is_refused_by_name_and_the_half_built_object_goes_quietly(monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    _refuse_mode()
    gc.collect()
    assert unraisable == [], "no error from collecting the object whose __init__ failed"


def test_inotify_is_the_default(tree):
    s = Snapshotter(tree)
    s.baseline()
    assert s._watcher is not None
    s.close()


@pytest.mark.parametrize("mode", ["stat", "full"])
def test_first_take_without_baseline_adds_the_whole_tree(tree, mode):
    """No baseline = no lower layers (moby collectChanges without layers: every path is ChangeAdd)."""
    os.setxattr(tree / "etc/conf", "user.k", b"v")
    c = Snapshotter(tree, mode=mode, watch=False).take()
    assert c.added == ("etc", "etc/conf", "etc/d", "etc/d/one", "etc/d/two", "same", "usr", "usr/bin",
                       "usr/bin/tool")
    assert c.modified == c.deleted == c.opaque == ()


def test_a_closed_snapshotter_still_takes_by_walking(tree):
    s = Snapshotter(tree)
    s.baseline()
    s.close()
    write(tree / "new", "n")
    assert s.take().added == ("new",)
    s.close()
    s.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_dropped_snapshotter_releases_its_inotify_fd(tree):
    before = _open_fds()
    s = Snapshotter(tree)
    s.baseline()
    assert _open_fds() == before + 1, "one inotify instance"
    del s
    gc.collect()
    assert _open_fds() == before


# -- walking -----------------------------------------------------------------------------------

def test_an_ignored_entry_does_not_hide_its_siblings(tree):
    s = Snapshotter(tree, IgnoreList.of(["/many/skip"]), watch=False)
    s.baseline()
    names = [f"f{i:02d}" for i in range(40)]
    for n in names:
        write(tree / "many" / n)
    write(tree / "many/skip")
    assert s.take().added == ("many", *(f"many/{n}" for n in names))


def test_a_directory_replaced_by_a_symlink_to_a_lookalike_is_not_looked_through(tree, watch):
    write(tree / "elsewhere/one", "other")  # same child name as etc/d/one
    write(tree / "elsewhere/two", "other")
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    shutil.rmtree(tree / "etc/d")
    os.symlink("../elsewhere", tree / "etc/d")
    c = s.take()
    assert set(c.modified) == {"etc", "etc/d"}
    assert c.added == () and c.deleted == (), "nothing below a symlink belongs to the layer"
    s.close()


def test_a_renamed_directory_falls_back_to_a_walk_and_says_so(tree, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    s = Snapshotter(tree, watch=True)
    s.baseline()
    os.rename(tree / "etc/d", tree / "moved")
    c = s.take()
    assert c.added == ("moved", "moved/one", "moved/two") and c.deleted == ("etc/d",)
    assert "inotify record incomplete: walking the whole root" in caplog.messages
    s.close()


# -- what counts as a change (moby statDifferent) ----------------------------------------------

def test_directory_xattrs_are_compared_but_its_ctime_alone_is_no_change(tree, watch):
    d = tree / "etc/d"
    os.setxattr(d, "user.a", b"1")
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    os.chmod(d, stat.S_IMODE(os.lstat(d).st_mode))  # the same mode: only the ctime moves
    assert s.take().empty
    os.setxattr(d, "user.a", b"2")
    assert s.take().modified == ("etc/d",)
    os.removexattr(d, "user.a")
    assert s.take().modified == ("etc/d",)
    s.close()


@pytest.mark.parametrize("mode", ["stat", "full"])
def test_a_fifo_whose_ctime_alone_moved_is_no_change(tree, watch, mode):
    os.mkfifo(tree / "fifo", 0o600)  # full mode hashes regular files only: reading a fifo would block
    s = Snapshotter(tree, mode=mode, watch=watch)
    s.baseline()
    os.chmod(tree / "fifo", 0o600)
    assert s.take().empty
    os.chmod(tree / "fifo", 0o640)
    assert s.take().modified == ("fifo",)
    s.close()


def test_full_mode_sees_a_size_change_behind_a_restored_mtime(tree, watch):
    s = Snapshotter(tree, mode="full", watch=watch)
    s.baseline()
    write(tree / "same", "much longer now", 1000)
    assert s.take().modified == ("same",)
    s.close()


# -- recreated directories (OCI opaque whiteouts) ----------------------------------------------

def test_everything_below_a_recreated_directory_is_carried(tree, watch):
    write(tree / "etc/d/sub/f", "f")
    write(tree / "etc/d/sub/g", "g")
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    write(tree / "zz-late", "z")
    assert s.take().added == ("zz-late",)  # known last: vanished paths are looked at in that order
    os.rename(tree / "etc/d", tree / "etc/old-d")
    os.mkdir(tree / "etc/d")
    os.rename(tree / "etc/old-d/sub", tree / "etc/d/sub")  # sub/f keeps its inode and ctime
    os.unlink(tree / "etc/d/sub/g")
    write(tree / "etc/d/one", "again")  # a new file where a lower one was
    shutil.rmtree(tree / "etc/old-d")
    os.unlink(tree / "same")
    os.unlink(tree / "usr/bin/tool")
    os.unlink(tree / "zz-late")
    c = s.take()
    assert c.opaque == ("etc/d",)
    assert {"etc/d/one", "etc/d/sub/f"} <= set(c.added), "the opaque marker hides the lower copies"
    assert not any(p.startswith("etc/d/") for p in c.modified)
    assert c.deleted == ("same", "usr/bin/tool", "zz-late"), "no whiteouts below the opaque directory"
    s.close()


def test_a_recreated_directory_is_watched_again(tmp_path):
    held = []

    def recreate(root):
        held.append(os.open(root / "etc/d", os.O_RDONLY | os.O_DIRECTORY))  # its inode number stays taken
        shutil.rmtree(root / "etc/d")
        os.mkdir(root / "etc/d")

    try:
        first, second = watched_and_walked(tmp_path, recreate, lambda root: write(root / "etc/d/later", "l"))
    finally:
        for fd in held:
            os.close(fd)
    assert first.opaque == ("etc/d",) and first.deleted == ()
    assert second.added == ("etc/d/later",), "an event in the new directory is seen"


def test_a_directory_replaced_by_a_file_and_back_starts_afresh(tmp_path):
    def to_file(root):
        shutil.rmtree(root / "etc/d")
        write(root / "etc/d", "file")

    def to_dir(root):
        os.unlink(root / "etc/d")
        write(root / "etc/d/one", "new one")

    first, second = watched_and_walked(tmp_path, to_file, to_dir)
    assert first.modified == ("etc", "etc/d") and first.deleted == ()
    assert second.added == ("etc/d/one",) and second.modified == ("etc", "etc/d")


# -- hardlinks and ignored paths under inotify -------------------------------------------------

def test_hardlinks_in_subdirectories_match_a_walk(tmp_path):
    link, unlink = watched_and_walked(
        tmp_path,
        lambda root: os.link(root / "etc/conf", root / "usr/conf-link"),
        lambda root: os.unlink(root / "usr/conf-link"),
    )
    assert "usr/conf-link" in link.added and "etc/conf" in link.modified
    assert unlink.deleted == ("usr/conf-link",) and "etc/conf" in unlink.modified


def test_an_ignored_path_created_by_a_step_is_not_reported(tmp_path):
    (created,) = watched_and_walked(tmp_path, lambda root: write(root / "cache", "c"),
                                    ignore=IgnoreList.of(["/cache"]))
    assert created.empty


# -- hint paths (COPY/ADD) ---------------------------------------------------------------------

def test_hint_paths_skip_the_missing_the_ignored_and_the_root_but_not_the_rest(tree, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    s = Snapshotter(tree, IgnoreList.of(["/cache"]), watch=False)
    s.baseline()
    write(tree / "cache/blob", "c")
    write(tree / "z/after", "z")
    write(tree / "X", "x")
    c = s.take_paths(["/", ".", "/a-missing/x", "/cache", "/cache/blob", "/z/after", "/X"])
    assert c.added == ("X", "z", "z/after")
    assert c.modified == c.deleted == ()
    assert "hint path /a-missing/x does not exist below real directories; skipped" in caplog.messages


def test_a_hint_on_a_directory_compares_its_whole_subtree(tree):
    s = Snapshotter(tree, watch=False)
    s.baseline()
    os.unlink(tree / "etc/d/one")
    write(tree / "etc/d/three", "3")
    c = s.take_paths(["/etc/d"])
    assert c.deleted == ("etc/d/one",) and c.added == ("etc/d/three",) and c.modified == ("etc/d",)


def test_a_hint_through_two_symlinked_parents_is_resolved_at_each_level(tmp_path):
    root = tmp_path / "root"
    (root / "real_a").mkdir(parents=True)
    (root / "real_b").mkdir()
    os.symlink("real_a", root / "a")
    os.symlink("/real_b", root / "real_a/b")  # absolute: the root's /real_b
    s = Snapshotter(root, watch=False)
    s.baseline()
    write(root / "real_b/f", "f")
    assert s.take_paths(["/a/b/f"]).added == ("real_b/f",)


@pytest.mark.parametrize("name", ["root ", "rootX"], ids=["trailing-space", "trailing-X"])
def test_hint_resolution_works_whatever_the_root_is_called(tmp_path, name):
    root = make_tree(tmp_path / name)
    os.symlink("/usr/bin", root / "bin")
    s = Snapshotter(root, watch=False)
    s.baseline()
    write(root / "usr/bin/copied", "c")
    assert s.take_paths(["/bin/copied"]).added == ("usr/bin/copied",)
