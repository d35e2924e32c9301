"""Whiteouts at their edges (found by mutation testing of fs/whiteouts.py). The rule (OCI
image-spec layer.md, "Whiteouts"): a whiteout hides the lower layers' resource and everything
below it, never the entries of its own layer; the module adds that missing targets are ignored
and that ignored paths and their ancestors are never removed."""

from __future__ import annotations

import io
import os

import pytest

from pybuildless.errors import LayerSecurityError
from pybuildless.fs.extract import extract_layer
from pybuildless.fs.ignore import IgnoreList
from tests.fs_hostile import entry, tar_bytes


def apply(root, *entries, **kw):
    return extract_layer(io.BytesIO(tar_bytes(list(entries))), root, **kw)


def tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def test_whiteout_after_a_recreated_directory_still_hides_its_lower_content(tmp_path):
    """Same result as with the whiteout first (the order the spec recommends): the lower tree
    is gone, this layer's entries below it stay."""
    lower = [entry("a/d/lower", "file", b"l"), entry("a/d/sub/deep", "file", b"l"), entry("a/e/lower", "file", b"l")]
    after, first = tmp_path / "after", tmp_path / "first"
    after.mkdir()
    first.mkdir()
    apply(after, *lower)
    apply(after, entry("a/d/new", "file", b"n"), entry("a/.wh.d", "file"), entry("a/e", "dir"), entry("a/.wh.e", "file"))
    assert tree(after) == ["a", "a/d", "a/d/new", "a/e"]
    apply(first, *lower)
    apply(first, entry("a/.wh.d", "file"), entry("a/d/new", "file", b"n"), entry("a/.wh.e", "file"), entry("a/e", "dir"))
    assert tree(first) == tree(after)


def test_whiteout_of_a_symlink_from_the_same_layer_never_follows_it(tmp_path):
    apply(tmp_path, entry("target/x", "file", b"lower"))
    apply(tmp_path, entry("link", "symlink", link="target"), entry(".wh.link", "file"))
    assert os.readlink(tmp_path / "link") == "target"
    assert (tmp_path / "target/x").read_bytes() == b"lower"


def test_whiteout_in_a_missing_directory_creates_nothing(tmp_path):
    apply(tmp_path, entry("keep", "file", b"k"))
    apply(tmp_path, entry("nodir/.wh..wh..opq", "file"), entry("deeper/missing/.wh..wh..opq", "file"),
          entry("gone/.wh.x", "file"))
    assert tree(tmp_path) == ["keep"]


def test_opaque_keeps_ancestors_of_ignored_paths_even_when_those_are_absent(tmp_path):
    """/mnt/data is on the ignore list but not there: /mnt is still its ancestor and stays."""
    apply(tmp_path, entry("mnt/old", "file", b"o"), entry("srv/old", "file", b"o"))
    apply(tmp_path, entry(".wh..wh..opq", "file"), ignore=IgnoreList.of(["/mnt/data"]))
    assert tree(tmp_path) == ["mnt"]


def test_every_whiteout_entry_is_counted(tmp_path):
    apply(tmp_path, entry("d/x", "file", b"x"), entry("f", "file", b"f"))
    stats = apply(tmp_path, entry(".wh.f", "file"), entry("d/.wh..wh..opq", "file"), entry(".wh.absent", "file"),
                  entry("d/.wh..wh.plnk", "file"), entry("new", "file", b"n"))
    assert stats.whiteouts == 4 and tree(tmp_path) == ["d", "new"]


@pytest.mark.parametrize("name", [".wh.", "d/.wh..", "d/.wh..."])
def test_whiteout_naming_the_directory_itself_or_its_parent_is_refused(tmp_path, name):
    """``.wh.``, ``.wh..`` and ``.wh...`` would hide "", "." or "..": a hostile layer, refused."""
    apply(tmp_path, entry("d/x", "file", b"x"), entry("keep", "file", b"k"))
    with pytest.raises(LayerSecurityError, match=f"invalid whiteout {name!r}"):
        apply(tmp_path, entry(name, "file"))
    assert tree(tmp_path) == ["d", "d/x", "keep"]


def test_whiteout_of_an_ancestor_of_an_ignored_path_keeps_the_ignored_branch(tmp_path):
    apply(tmp_path, entry("var/run/docker.sock", "file", b"s"), entry("var/lib/x", "file", b"x"),
          entry("var/lib/deep/y", "file", b"y"), entry("other", "file", b"o"))
    apply(tmp_path, entry(".wh.var", "file"), entry(".wh.other", "file"), ignore=IgnoreList.of(["/var/run"]))
    assert tree(tmp_path) == ["var", "var/run", "var/run/docker.sock"]


def test_whiteout_below_the_root_keeps_the_ignored_branch_at_its_full_path(tmp_path):
    """The ignore list holds absolute paths: a whiteout in /srv judges /srv/app/cache, not app/cache."""
    apply(tmp_path, entry("srv/app/cache/c", "file", b"c"), entry("srv/app/code", "file", b"x"),
          entry("app/cache/c", "file", b"c"))
    apply(tmp_path, entry("srv/.wh.app", "file"), ignore=IgnoreList.of(["/srv/app/cache"]))
    assert tree(tmp_path) == ["app", "app/cache", "app/cache/c", "srv", "srv/app", "srv/app/cache", "srv/app/cache/c"]


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_non_directory_on_the_way_to_an_ignored_path_is_kept(tmp_path, kind):
    """An ancestor of an ignored path is never removed, whatever it is: here /a/b, which the layer
    below made a file or a symlink, is an ancestor of the ignored /a/b/c."""
    apply(tmp_path, entry("a/b", kind, b"b", link="elsewhere"), entry("a/x", "file", b"x"))
    apply(tmp_path, entry(".wh.a", "file"), ignore=IgnoreList.of(["/a/b/c"]))
    assert tree(tmp_path) == ["a", "a/b"]
