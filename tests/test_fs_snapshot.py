from __future__ import annotations

import os
import shutil

import pytest

from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.snapshot import Snapshotter


def write(path, data="x", mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


@pytest.fixture(params=[True, False], ids=["inotify", "walk"])
def watch(request):
    return request.param


def make_tree(root):
    write(root / "etc/conf", "a", 1000)
    write(root / "etc/d/one", "1")
    write(root / "etc/d/two", "2")
    write(root / "usr/bin/tool", "t")
    write(root / "same", "s", 1000)
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "root")


def test_no_change_is_empty(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    assert s.take().empty


def test_added_modified_deleted_and_state_carried_forward(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    write(tree / "new/file", "n")
    write(tree / "etc/conf", "b", 1000)  # same size, mtime restored: ctime still moves
    shutil.rmtree(tree / "etc/d")
    c = s.take()
    assert c.added == ("new", "new/file")
    assert "etc/conf" in c.modified and "etc" in c.modified
    assert c.deleted == ("etc/d",), "one whiteout for a deleted tree"
    assert c.opaque == ()
    # the next step starts from the new state
    os.unlink(tree / "new/file")
    c2 = s.take()
    assert c2.deleted == ("new/file",) and c2.added == ()


def test_created_then_deleted_within_a_step_leaves_no_whiteout(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    write(tree / "tmpfile")
    os.unlink(tree / "tmpfile")
    assert s.take().deleted == ()


def test_dir_recreated_becomes_opaque(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    os.rename(tree / "etc/d", tree / "moved-away")  # keeps the old inode alive, so the new dir differs
    write(tree / "etc/d/three", "3")
    c = s.take()
    assert c.opaque == ("etc/d",)
    assert "etc/d/three" in c.added and "moved-away/one" in c.added
    assert c.deleted == (), "children of an opaque dir need no whiteouts"


def test_dir_replaced_by_file_needs_no_child_whiteouts(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    shutil.rmtree(tree / "etc/d")
    write(tree / "etc/d", "now a file")
    c = s.take()
    assert "etc/d" in c.modified and c.deleted == ()
    shutil.rmtree(tree / "usr/bin")
    os.symlink("/elsewhere", tree / "usr/bin")
    c = s.take()
    assert "usr/bin" in c.modified and c.deleted == ()


def test_full_mode_ignores_touch_without_content_change(tree, watch):
    s = Snapshotter(tree, mode="full", watch=watch)
    s.baseline()
    os.chmod(tree / "same", 0o644)  # ctime moves, nothing else
    stat_mode = Snapshotter(tree, watch=watch)
    stat_mode.baseline()
    assert s.take().empty
    write(tree / "same", "t", 1000)  # same size and mtime, new content
    assert s.take().modified == ("same",)


def test_ignored_paths_are_never_snapshotted(tree, watch):
    (tree / "proc").mkdir()
    write(tree / "proc/x")
    s = Snapshotter(tree, IgnoreList.of(["/proc", "/etc/d"]), watch=watch)
    s.baseline()
    assert "proc" not in s.state and "etc/d" not in s.state and "etc/d/one" not in s.state
    write(tree / "proc/y")
    shutil.rmtree(tree / "etc/d")
    c = s.take()
    assert c.added == () and c.deleted == ()
    assert c.modified == ("etc",), "only the parent's mtime moved"


def test_hint_paths_only_look_where_told(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    write(tree / "app/lib/mod.py", "code")
    write(tree / "elsewhere", "not looked at")
    c = s.take_paths(["/app/lib"])
    assert c.added == ("app", "app/lib", "app/lib/mod.py")
    assert "elsewhere" not in s.state
    # a full walk later still sees what the hint walk skipped
    assert s.take().added == ("elsewhere",)


def test_hardlink_added_to_existing_file_reports_the_group(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    os.link(tree / "same", tree / "usr/same-link")
    c = s.take()
    assert "usr/same-link" in c.added and "same" in c.modified


def test_inotify_path_handles_deep_replacements_and_renames(tree):
    s = Snapshotter(tree, watch=True)
    s.baseline()
    assert s._watcher is not None, "inotify is available on Linux test machines"
    shutil.rmtree(tree / "etc")
    write(tree / "etc", "file now")
    os.rename(tree / "same", tree / "usr/bin/renamed")
    write(tree / "usr/bin/tool", "rewritten", 0)
    c = s.take()
    assert s._watcher is not None, "no fallback needed for these events"
    assert c.added == ("usr/bin/renamed",) and c.deleted == ("same",)
    assert set(c.modified) == {"etc", "usr/bin", "usr/bin/tool"}
    (tree / "etc").unlink()
    write(tree / "etc/again/x", "x")
    c = s.take()
    assert c.added == ("etc/again", "etc/again/x") and c.modified == ("etc",)
    write(tree / "etc/again/y", "y")  # the new directory is watched too
    assert s.take().added == ("etc/again/y",)
    os.rename(tree / "etc/again", tree / "moved")  # directory rename: falls back to a full walk
    c = s.take()
    assert c.added == ("moved", "moved/x", "moved/y") and c.deleted == ("etc/again",)
    s.close()


def test_hint_paths_through_symlinked_dirs_are_resolved_in_root(tree, watch):
    os.symlink("/usr/bin", tree / "bin")  # absolute: must mean <root>/usr/bin, never the host's
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    write(tree / "usr/bin/copied", "c")
    c = s.take_paths(["/bin/copied", "/bin/../etc/conf"])
    assert c.added == ("usr/bin/copied",)
    assert "bin/copied" not in s.state


def test_many_hint_paths_are_cheap(tree, watch):
    s = Snapshotter(tree, watch=watch)
    s.baseline()
    for i in range(300):
        write(tree / f"many/f{i}", "x")
    c = s.take_paths([f"/many/f{i}" for i in range(300)])
    assert len(c.added) == 301 and c.added[0] == "many"


def test_directory_recreated_with_its_old_inode_number_is_walked(tree, watch):
    reused = False
    for attempt in range(20):  # ext4 usually hands the freed inode straight back
        s = Snapshotter(tree, watch=watch)
        s.baseline()
        old_ino = os.lstat(tree / "etc/d").st_ino
        for child in os.listdir(tree / "etc/d"):
            os.unlink(tree / "etc/d" / child)
        os.rmdir(tree / "etc/d")
        os.mkdir(tree / "etc/d")
        write(tree / f"etc/d/new{attempt}", "n")
        c = s.take()
        assert f"etc/d/new{attempt}" in c.added
        reused = os.lstat(tree / "etc/d").st_ino == old_ino
        if reused:
            assert c.opaque == () and c.deleted, "explicit whiteouts when the directory looks the same"
        else:
            assert c.opaque == ("etc/d",)
        assert s.take().empty
        s.close()
        if reused:
            break
