"""COPY/ADD file rules at their edges (builder/copy.py, builder/copysources.py, cache/keys.py).

Expected values come from the rules' sources, never from the code under test:
- Dockerfile reference, COPY (docs.docker.com/reference/dockerfile/#copy): a directory source copies
  its contents; ``<dest>`` relative to WORKDIR; a trailing ``/`` makes it a directory; missing
  parents are created; new files are 0:0 unless ``--chown``; ``--parents`` keeps the path after
  a ``/./`` pivot; ``--exclude`` patterns.
- BuildKit moby/buildkit@73ed6825c4b7569379ef89df0aedcdbe64473d31 frontend/dockerfile/dockerfile2llb/
  convert.go dispatchCopy: one copy action per source, ``AllowWildcard: true``,
  ``AllowEmptyWildcard: true`` (a pattern matching nothing copies nothing), ``FollowSymlinks: true``
  (the source path itself is followed).
- fsutil tonistiigi/fsutil@0834f99b7b85462efb69b4f571a4fa3ca7da5ac9 (Docker 20.10's) copy/copy.go:
  newCopier makes one inode map per Copy call (hardlinks kept within one source), copyFileInfo
  chowns, chmods and sets the source's mtime, copyXAttrs copies extended attributes, and a
  directory's times are set after its children are written; prepareTargetDir MkdirAll()s with 0755.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pybuildless.builder.chmod import parse_chmod
from pybuildless.builder.copy import CopyRequest, SourceRoot, copy_files, source_digest
from pybuildless.builder.copysources import resolve_sources
from pybuildless.cache.keys import chain, env_parts
from pybuildless.dockerfile.dockerignore import PatternMatcher
from pybuildless.dockerfile.pathmatch import match as go_match
from pybuildless.errors import BuildError
from pybuildless.fs import owners

ROOT = os.geteuid() == 0


def _tree(base: Path, files: dict[str, bytes | str | None]) -> Path:
    """Files (bytes), symlinks ("-> target" strings) and directories (None) under ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.mkdir(exist_ok=True)
        elif isinstance(data, str):
            os.symlink(data.removeprefix("-> "), path)
        else:
            path.write_bytes(data)
    return base


def _ctx(tmp_path: Path, files: dict, ignore: list[str] | None = None) -> SourceRoot:
    root = _tree(tmp_path / "ctx", files)
    return SourceRoot(str(root), is_context=True, ignore=PatternMatcher(ignore) if ignore is not None else None)


def _stage(tmp_path: Path, files: dict) -> SourceRoot:
    return SourceRoot(str(_tree(tmp_path / "stage", files)), is_context=False, description="stage src")


def _copy(src: SourceRoot, dest_root: Path, sources: list[str], dest: str, **kw):
    dest_root.mkdir(exist_ok=True)
    return copy_files(src, CopyRequest(sources=sources, dest=dest, match=go_match, **kw), str(dest_root))


def _files(root: Path) -> dict[str, str]:
    """in-root path -> "file:content" / "link:target" / "dir" for everything under ``root``."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            p = Path(dirpath) / name
            rel = "/" + str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "file:" + p.read_text()
    return out


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return owners.recorded_owner(str(path)) or (st.st_uid, st.st_gid)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- which sources ------------------------------------------------------------------------------


def test_sources_cannot_climb_out_of_the_context(tmp_path):
    """Context paths are cleaned against the context root: ``../x`` and ``/x`` are ``x``, ``/`` and
    ``..`` the whole context (BuildKit cleans the path with a leading / before the copy)."""
    src = _ctx(tmp_path, {"x": b"inside", "d/y": b"y", "XY": b"xy", "Y": b"y"})
    (tmp_path / "x").write_bytes(b"outside")
    _copy(src, tmp_path / "o", ["/XY", "XY"], "/xy/")
    assert _files(tmp_path / "o") == {"/xy": "dir", "/xy/XY": "file:xy"}
    out = tmp_path / "out"
    _copy(src, out, ["../x"], "/a")
    _copy(src, out, ["/../../x"], "/b")
    _copy(src, out, ["d/../../x"], "/c")
    assert [(out / n).read_bytes() for n in "abc"] == [b"inside"] * 3
    _copy(src, out, ["/"], "/all/")
    _copy(src, out, [".."], "/up/")
    assert _files(out / "all") == _files(out / "up") == {"/x": "file:inside", "/d": "dir", "/d/y": "file:y",
                                                         "/XY": "file:xy", "/Y": "file:y"}
    assert resolve_sources(src, CopyRequest(sources=["./d//y", "d/./y", "/"], dest="/")) == [
        ("d/y", ""), ("d/y", ""), (".", "")]


def test_a_missing_literal_source_names_itself_and_its_root(tmp_path):
    src = _stage(tmp_path, {"here": b"x"})
    with pytest.raises(BuildError) as err:
        _copy(src, tmp_path / "out", ["here", "./gone/file"], "/d/")
    assert str(err.value) == "COPY source './gone/file' not found in the stage src"


def test_a_wildcard_matching_nothing_copies_nothing(tmp_path):
    """AllowEmptyWildcard: true in dispatchCopy; the other sources are still copied."""
    src = _ctx(tmp_path, {"a.txt": b"a"})
    result = _copy(src, tmp_path / "out", ["*.none", "a.txt", "no[pe]/*"], "/d/")
    assert _files(tmp_path / "out") == {"/d": "dir", "/d/a.txt": "file:a"}
    assert result.touched == ["/d", "/d/a.txt"]


def test_wildcards_match_component_by_component(tmp_path):
    """filepath.Match per path component: ``*`` never crosses ``/``; every match of every
    component is followed, in name order; a literal component must exist below each match,
    a dangling link counts as existing (it is copied as the link it is)."""
    src = _ctx(tmp_path, {"a1/keep": b"1", "a2/keep": b"2", "a3/other": b"3", "a4": b"file",
                          "b1/keep": b"no", "a5/keep": "-> nowhere", "a1/sub/keep": b"deep"})
    req = CopyRequest(sources=["a*/keep"], dest="/", match=go_match)
    assert resolve_sources(src, req) == [("a1/keep", ""), ("a2/keep", ""), ("a5/keep", "")]
    req = CopyRequest(sources=["*/*/keep"], dest="/", match=go_match)
    assert resolve_sources(src, req) == [("a1/sub/keep", "")]
    req = CopyRequest(sources=["a?"], dest="/", match=go_match)
    assert [r for r, _ in resolve_sources(src, req)] == ["a1", "a2", "a3", "a4", "a5"]
    req = CopyRequest(sources=["a4/*", "a[12]/k*"], dest="/", match=go_match)
    assert [r for r, _ in resolve_sources(src, req)] == ["a1/keep", "a2/keep"]
    # a match that is a file has nothing below it; the matches after it are still looked into
    req = CopyRequest(sources=["a*/k*"], dest="/", match=go_match)
    assert [r for r, _ in resolve_sources(src, req)] == ["a1/keep", "a2/keep", "a5/keep"]


def test_a_wildcard_needs_a_matcher(tmp_path):
    src = _ctx(tmp_path, {"a": b"a"})
    with pytest.raises(BuildError, match="^wildcard sources need a matcher$"):
        resolve_sources(src, CopyRequest(sources=["*"], dest="/"))
    # literal sources need none
    assert resolve_sources(src, CopyRequest(sources=["a"], dest="/")) == [("a", "")]


def test_dockerignored_sources_are_not_in_the_context(tmp_path):
    """A path .dockerignore keeps out of the context is not there to copy: a literal one is
    "not found", a wildcard skips it, and a directory's ignored entries are left out, except a
    directory the context walk enters for a ``!`` pattern (fsutil walker.go@0834f99b7b85)."""
    src = _ctx(tmp_path, {"secret": b"s", "pub": b"p", "logs/a.log": b"a", "logs/keep.log": b"k",
                          "app/x.tmp": b"t", "app/y": b"y", "app/sub/z.tmp": b"z"},
               ignore=["secret", "logs", "!logs/keep.log", "**/*.tmp"])
    with pytest.raises(BuildError, match="'secret' not found in the build context"):
        _copy(src, tmp_path / "o1", ["secret"], "/s")
    _copy(src, tmp_path / "o2", ["*"], "/all/")
    assert _files(tmp_path / "o2") == {"/all": "dir", "/all/pub": "file:p", "/all/y": "file:y",
                                       "/all/sub": "dir", "/all/keep.log": "file:k"}
    _copy(src, tmp_path / "o3", ["."], "/c/")
    assert set(_files(tmp_path / "o3")) == {"/c", "/c/pub", "/c/app", "/c/app/y", "/c/app/sub", "/c/logs",
                                            "/c/logs/keep.log"}
    # a stage's files are never judged by the context's .dockerignore
    stage = SourceRoot(src.root, is_context=False, ignore=src.ignore)
    _copy(stage, tmp_path / "o4", ["secret", "app"], "/s/")
    assert set(_files(tmp_path / "o4")) == {"/s", "/s/secret", "/s/x.tmp", "/s/y", "/s/sub", "/s/sub/z.tmp"}


def test_exclude_patterns_match_a_path_or_its_parents(tmp_path):
    """COPY --exclude: a pattern matching a directory leaves out all below it; ``**`` spans any
    number of components (zero included); patterns are relative to each source."""
    src = _ctx(tmp_path, {"src/a.py": b"a", "src/a.pyc": b"c", "src/pkg/b.pyc": b"c", "src/pkg/c.py": b"c",
                          "src/cache/x": b"x", "src/deep/cache/y": b"y", "src/keep/x": b"x"})
    _copy(src, tmp_path / "out", ["src"], "/app/", excludes=("**/*.pyc", "cache", "keep/x/more"))
    assert set(_files(tmp_path / "out")) == {"/app", "/app/a.py", "/app/pkg", "/app/pkg/c.py", "/app/deep",
                                             "/app/deep/cache", "/app/deep/cache/y", "/app/keep",
                                             "/app/keep/x"}
    _copy(src, tmp_path / "out2", ["src"], "/app/", excludes=("**/cache/**", "/pkg/", "*.py*", "**/deep/cache/y",
                                                             "Xkeep"))
    assert set(_files(tmp_path / "out2")) == {"/app", "/app/cache", "/app/deep", "/app/deep/cache",
                                              "/app/keep", "/app/keep/x"}
    # without a matcher --exclude cannot be judged and nothing is left out
    dest = tmp_path / "out3"
    dest.mkdir()
    copy_files(src, CopyRequest(sources=["src/pkg"], dest="/p/", excludes=("*.pyc",)), str(dest))
    assert set(_files(dest)) == {"/p", "/p/b.pyc", "/p/c.py"}


# -- where they go ------------------------------------------------------------------------------


@pytest.mark.parametrize("workdir, dest, want", [
    ("/w", "f", "/w/f"), ("/w", "./", "/w/f.txt"), ("/w", ".", "/w/f.txt"), ("", "rel", "/rel"),
    (None, "rel", "/rel"), ("/w", "/abs", "/abs"), ("/w", "sub/", "/w/sub/f.txt"), ("/w", "", "/w/f.txt"),
])
def test_destination_is_relative_to_workdir(tmp_path, workdir, dest, want):
    src = _ctx(tmp_path, {"f.txt": b"F"})
    _copy(src, tmp_path / "out", ["f.txt"], dest, workdir=workdir)
    assert (tmp_path / "out" / want.lstrip("/")).read_bytes() == b"F"
    assert _files(tmp_path / "out")[want] == "file:F"


def test_a_file_goes_into_an_existing_directory_or_through_a_link(tmp_path):
    """A destination that is a directory at copy time takes the file by its name; a destination
    that is a symlink is followed (fsutil resolves it with fs.RootPath, last component too),
    inside the destination root."""
    src = _ctx(tmp_path, {"f": b"new"})
    out = _tree(tmp_path / "out", {"dir": None, "etc/target": b"old", "l2file": "-> /etc/target",
                                   "l2dir": "-> dir", "abs": "-> /../../dir"})
    _copy(src, out, ["f"], "/dir")
    _copy(src, out, ["f"], "/l2file")
    _copy(src, out, ["f"], "/abs")
    assert (out / "dir" / "f").read_bytes() == b"new"
    assert (out / "etc" / "target").read_bytes() == b"new" and os.readlink(out / "l2file") == "/etc/target"
    _copy(src, out, ["f"], "/l2dir/")
    assert (out / "dir" / "f").read_bytes() == b"new" and os.path.islink(out / "l2dir")
    assert not (tmp_path / "dir").exists()


def test_a_link_named_like_the_file_inside_a_directory_is_replaced_not_followed(tmp_path):
    src = _ctx(tmp_path, {"f": b"new", "tree/g": b"g2"})
    out = _tree(tmp_path / "out", {"d/f": "-> /victim", "victim": b"keep", "t/g": "-> ../victim"})
    _copy(src, out, ["f"], "/d/")
    _copy(src, out, ["tree"], "/t")
    assert (out / "victim").read_bytes() == b"keep"
    assert not os.path.islink(out / "d" / "f") and (out / "d" / "f").read_bytes() == b"new"
    assert not os.path.islink(out / "t" / "g") and (out / "t" / "g").read_bytes() == b"g2"


def test_several_sources_one_after_another(tmp_path):
    """One copy action per source: a directory source copies its contents into the destination
    (making it a directory), so a later file goes into it; files onto a non-directory replace it."""
    src = _ctx(tmp_path, {"d/x": b"x", "f": b"f", "g": b"g"})
    _copy(src, tmp_path / "o1", ["d", "f"], "/t")
    assert _files(tmp_path / "o1") == {"/t": "dir", "/t/x": "file:x", "/t/f": "file:f"}
    _copy(src, tmp_path / "o2", ["f", "g"], "/t")
    assert _files(tmp_path / "o2") == {"/t": "file:g"}


def test_parents_keep_the_path_after_the_pivot(tmp_path):
    """COPY --parents (Dockerfile reference): the source's path is kept below the destination; a
    ``/./`` in it is the pivot: only the part after it is kept. A leading ``./`` is no pivot."""
    src = _ctx(tmp_path, {"a/b/c.txt": b"c", "a/b/d/e.txt": b"e", "x/y.txt": b"y"})
    _copy(src, tmp_path / "o", ["a/./b/c.txt", "./x/y.txt", "a/b/./d", "./a/./b/c.txt"], "/out/", parents=True)
    assert _files(tmp_path / "o") == {"/out": "dir", "/out/b": "dir", "/out/b/c.txt": "file:c", "/out/x": "dir",
                                      "/out/x/y.txt": "file:y", "/out/d": "dir", "/out/d/e.txt": "file:e"}
    assert resolve_sources(src, CopyRequest(sources=["./a/./b/c.txt", "a/b/c.txt", "./x/y.txt", "./a/b/./d",
                                                     "/./x/y.txt", "a/./b/./c.txt"], dest="/", parents=True)) == [
        ("a/b/c.txt", "a"), ("a/b/c.txt", ""), ("x/y.txt", ""), ("a/b/d", "a/b"), ("x/y.txt", ""), ("a/b/c.txt", "a")]
    # the first /./ is the pivot (strings.Cut), a pivot at the top keeps the whole path
    _copy(src, tmp_path / "two", ["a/./b/./c.txt", "/./x/y.txt"], "/out/", parents=True)
    assert _files(tmp_path / "two") == {"/out": "dir", "/out/b": "dir", "/out/b/c.txt": "file:c", "/out/x": "dir",
                                        "/out/x/y.txt": "file:y"}
    _copy(src, tmp_path / "w", ["a/*/c.txt"], "/out", parents=True)
    assert (tmp_path / "w" / "out" / "a" / "b" / "c.txt").read_bytes() == b"c"
    # without --parents a pivot is just a path
    _copy(src, tmp_path / "np", ["a/./b/c.txt"], "/out/")
    assert _files(tmp_path / "np") == {"/out": "dir", "/out/c.txt": "file:c"}


def test_writing_below_a_file_or_replacing_across_types_fails(tmp_path):
    src = _ctx(tmp_path, {"f": b"f", "d/x": b"x", "e/sub/y": b"y", "g/x/z": b"z"})
    out = _tree(tmp_path / "out", {"file": b"here", "t/x": None, "u/sub": b"a file", "v/x": b"file"})
    with pytest.raises(BuildError, match="^cannot create directory .*file: a file exists there$"):
        _copy(src, out, ["f"], "/file/deeper/f")
    with pytest.raises(BuildError, match=r"^cannot overwrite directory /t/x with a file$"):
        _copy(src, out, ["d"], "/t/")
    with pytest.raises(BuildError, match=r"^cannot copy directory onto existing file /u/sub$"):
        _copy(src, out, ["e"], "/u")
    assert (out / "file").read_bytes() == b"here" and (out / "u" / "sub").read_bytes() == b"a file"


# -- what they become ---------------------------------------------------------------------------


def test_owners_context_root_stage_kept_chown_wins(tmp_path):
    """Context files become 0:0, files from a stage keep their owners (a recorded owner counts),
    ``--chown`` overrides both, and directories made for the destination get --chown's owner."""
    ctx = _ctx(tmp_path, {"d/f": b"f"})
    stage = _stage(tmp_path, {"d/f": b"f", "d/g": b"g"})
    sroot = Path(stage.root)
    if ROOT:
        os.chown(sroot / "d" / "f", 1234, 5678)
        os.chown(ctx.root + "/d/f", 1234, 5678)
    else:
        os.setxattr(sroot / "d" / "f", owners.OWNER_XATTR, owners.encode(1234, 5678))
    os.setxattr(sroot / "d" / "g", owners.OWNER_XATTR, owners.encode(42, 43))
    out = tmp_path / "out"
    _copy(ctx, out, ["d"], "/ctx/")
    _copy(stage, out, ["d"], "/stage/")
    _copy(stage, out, ["d"], "/chown/a/b/", owner=(7, 8))
    assert _owner(out / "ctx" / "f") == (0, 0)
    assert _owner(out / "stage" / "f") == (1234, 5678)
    assert _owner(out / "stage" / "g") == (42, 43)
    assert _owner(out / "chown" / "a" / "b" / "f") == (7, 8) == _owner(out / "chown" / "a" / "b" / "g")
    assert _owner(out / "chown") == (7, 8) == _owner(out / "chown" / "a")
    assert _owner(out / "stage") == (0, 0)


def test_modes_chmod_and_new_directories(tmp_path):
    """Modes are kept; --chmod sets every copied entry (directories in the tree too), never the
    directories made for the destination (0755, prepareTargetDir); an existing destination
    directory keeps its own mode and owner."""
    src = _ctx(tmp_path, {"d/f": b"f", "d/sub/g": b"g", "x": b"x"})
    os.chmod(Path(src.root) / "d" / "f", 0o604)
    os.chmod(Path(src.root) / "d" / "sub", 0o700)
    out = _tree(tmp_path / "out", {"keep": None})
    os.chmod(out / "keep", 0o711)
    _copy(src, out, ["d"], "/plain/")
    assert (_mode(out / "plain"), _mode(out / "plain" / "f"), _mode(out / "plain" / "sub")) == (0o755, 0o604, 0o700)
    _copy(src, out, ["d"], "/new/deep/", chmod=parse_chmod("640"))
    assert _mode(out / "new") == _mode(out / "new" / "deep") == 0o755
    assert _mode(out / "new" / "deep" / "f") == _mode(out / "new" / "deep" / "sub") == 0o640
    _copy(src, out, ["d", "x"], "/keep/", chmod=parse_chmod("u=rwx,go=r"))
    assert _mode(out / "keep") == 0o711
    assert _mode(out / "keep" / "x") == _mode(out / "keep" / "sub") == 0o744


def test_mtimes_are_kept_for_files_links_and_directories(tmp_path):
    """copyFileInfo sets the source's times; a directory's after its children were written."""
    src = _stage(tmp_path, {"d/sub/f": b"f", "d/l": "-> sub/f"})
    base = Path(src.root) / "d"
    times = {"sub/f": 1_000_000_000, "sub": 1_100_000_000, "": 1_200_000_000}
    os.utime(base / "l", ns=(5, 1_300_000_000_000_000_000), follow_symlinks=False)
    for rel, sec in times.items():
        os.utime(base / rel if rel else base, (sec, sec))
    out = tmp_path / "out"
    _copy(src, out, ["d"], "/t/")
    assert os.stat(out / "t" / "sub" / "f").st_mtime == 1_000_000_000
    assert os.stat(out / "t" / "sub").st_mtime == 1_100_000_000
    assert os.lstat(out / "t" / "l").st_mtime_ns == 1_300_000_000_000_000_000
    assert os.stat(out / "t" / "sub").st_atime == 1_100_000_000


def test_hardlinks_are_kept_within_one_source_only(tmp_path):
    src = _ctx(tmp_path, {"d/a": b"same", "e": b"e"})
    os.link(Path(src.root) / "d" / "a", Path(src.root) / "d" / "b")
    os.link(Path(src.root) / "e", Path(src.root) / "d" / "e2")
    out = tmp_path / "out"
    _copy(src, out, ["d"], "/t/")
    a, b, e2 = (os.stat(out / "t" / n) for n in ("a", "b", "e2"))
    assert a.st_ino == b.st_ino and a.st_nlink == 2, "the two names of one file stay one file"
    assert e2.st_nlink == 1
    _copy(src, out, ["d/a", "d/b"], "/two/")
    assert os.stat(out / "two" / "a").st_ino != os.stat(out / "two" / "b").st_ino
    assert (out / "two" / "b").read_bytes() == b"same"
    _copy(src, out, ["d/*"], "/w/")
    assert os.stat(out / "w" / "a").st_ino != os.stat(out / "w" / "b").st_ino, "each match is a source"


def test_source_links_are_followed_links_inside_are_kept(tmp_path):
    src = _ctx(tmp_path, {"real/f": b"f", "linkdir": "-> real", "lf": "-> real/f", "real/in": "-> f",
                          "dangling": "-> nowhere"})
    out = tmp_path / "out"
    _copy(src, out, ["linkdir", "lf"], "/t/")
    assert _files(out) == {"/t": "dir", "/t/f": "file:f", "/t/in": "link:f", "/t/lf": "file:f"}
    # a link to nothing as a source: followed, there is nothing to copy (fsutil fails to stat it)
    with pytest.raises(BuildError, match="^COPY source 'dangling' not found in the build context$"):
        _copy(src, out, ["dangling"], "/dl")
    with pytest.raises(BuildError, match="^COPY source 'dangling' not found in the build context: a link"):
        _copy(src, out, ["dang*"], "/dl")
    assert not os.path.lexists(out / "dl")


def test_xattrs_come_from_stages_not_from_the_context(tmp_path):
    stage = _stage(tmp_path, {"f": b"f"})
    ctx = _ctx(tmp_path, {"f": b"f"})
    # a recorded owner (listed first) is applied as the owner; the attributes after it still copied
    os.setxattr(os.path.join(stage.root, "f"), owners.OWNER_XATTR, owners.encode(5, 6))
    for root in (stage.root, ctx.root):
        os.setxattr(os.path.join(root, "f"), "user.note", b"kept")
    out = tmp_path / "out"
    _copy(stage, out, ["f"], "/s")
    _copy(ctx, out, ["f"], "/c")
    _copy(stage, out, ["f"], "/o", owner=(3, 4))
    assert os.getxattr(out / "s", "user.note") == b"kept" and _owner(out / "s") == (5, 6)
    assert "user.note" not in os.listxattr(out / "c")
    assert _owner(out / "o") == (3, 4)


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_devices_are_copied_fifos_are_not(tmp_path):
    """fsutil@0834f99b7b85 copy(): devices by copyDevice; other special files fall to the end of
    the switch with a nil error and are not written."""
    stage = _stage(tmp_path, {"d": None})
    os.mknod(Path(stage.root) / "d" / "null", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(Path(stage.root) / "d" / "null", 0o620)
    os.mkfifo(Path(stage.root) / "d" / "fifo")
    out = tmp_path / "out"
    touched = _copy(stage, out, ["d"], "/dev/").touched
    st = os.lstat(out / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and _mode(out / "dev" / "null") == 0o620
    assert not os.path.lexists(out / "dev" / "fifo") and "/dev/fifo" not in touched


def test_a_deep_tree_closes_what_it_opens(tmp_path):
    """More directories than the copier keeps open at once (it resolves each in the root)."""
    files = {f"t/d{i:03}/f": str(i).encode() for i in range(300)}
    src = _ctx(tmp_path, files)
    before = len(os.listdir("/proc/self/fd"))
    out = tmp_path / "out"
    touched = _copy(src, out, ["t"], "/x/").touched
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(touched) == 601
    assert all((out / "x" / f"d{i:03}" / "f").read_bytes() == str(i).encode() for i in range(300))


def test_touched_paths_in_copy_order(tmp_path):
    src = _ctx(tmp_path, {"d/b": b"b", "d/a/c": b"c", "f": b"f"})
    out = _tree(tmp_path / "out", {"exists": None})
    touched = _copy(src, out, ["d", "f"], "/exists/n/").touched
    assert sorted(touched) == ["/exists/n", "/exists/n/a", "/exists/n/a/c", "/exists/n/b", "/exists/n/f"]
    assert touched[0] == "/exists/n" and touched.index("/exists/n/a") < touched.index("/exists/n/a/c")
    assert touched[-1] == "/exists/n/f"


def _tar(path: Path, name: str, data: bytes) -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o640
        tar.addfile(info, io.BytesIO(data))


def test_unpack_only_regular_files_and_never_with_parents(tmp_path):
    """ADD unpacks a local archive source into the destination directory; a link to it is
    followed first; --parents copies it as the file it is."""
    src = _ctx(tmp_path, {"a.tar": b"", "la": "-> a.tar", "dir": None})
    _tar(Path(src.root) / "a.tar", "inside.txt", b"in")
    asked = []

    def unpack(host: str) -> bool:
        asked.append(os.path.basename(host))
        return host.endswith(".tar")

    out = tmp_path / "out"
    _copy(src, out, ["a.tar", "la", "dir"], "/u/", unpack=unpack)
    assert (out / "u" / "inside.txt").read_bytes() == b"in" and not (out / "u" / "a.tar").exists()
    assert asked == ["a.tar", "a.tar"]
    _copy(src, out, ["a.tar"], "/p/", unpack=unpack, parents=True)
    assert tarfile.is_tarfile(out / "p" / "a.tar")
    (Path(src.root) / "bad.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(BuildError, match="^cannot extract archive bad.tar: "):
        _copy(src, out, ["bad.tar"], "/b/", unpack=unpack)


# -- the content digest of a COPY ---------------------------------------------------------------


def _digest(src, sources, dest="/d/", **kw) -> str:
    return source_digest(src, CopyRequest(sources=sources, dest=dest, match=go_match, **kw))


def test_digest_covers_where_what_and_how_but_not_times_or_owners(tmp_path):
    src = _ctx(tmp_path, {"d/f": b"f", "d/l": "-> f", "g": b"g"})
    d = Path(src.root)
    base = _digest(src, ["d"])
    assert base.startswith("sha256:") and len(base) == 71
    os.utime(d / "d" / "f", (5, 5))
    if ROOT:
        os.chown(d / "d" / "f", 99, 99)
    assert _digest(src, ["d"]) == base
    assert _digest(src, ["d"], dest="/e/") != base, "the destination is part of what lands"
    assert _digest(src, ["d"], workdir="/w", dest="d/") != _digest(src, ["d"], workdir="/v", dest="d/")
    assert _digest(src, ["d", "g"]) != base
    os.remove(d / "d" / "l")
    os.symlink("g", d / "d" / "l")
    assert _digest(src, ["d"]) != base, "a link's target"
    os.remove(d / "d" / "l")
    (d / "d" / "l").write_bytes(b"f")
    os.chmod(d / "d" / "l", 0o777)
    linked = _digest(src, ["d"])
    os.remove(d / "d" / "l")
    os.symlink("f", d / "d" / "l")
    assert _digest(src, ["d"]) == base and linked != base, "a file is not a link"
    (d / "d" / "f").write_bytes(b"F")
    assert _digest(src, ["d"]) != base


def test_digest_follows_file_content_past_one_chunk(tmp_path):
    big = os.urandom(3 << 20)
    src = _ctx(tmp_path, {"big": big})
    before = _digest(src, ["big"])
    (Path(src.root) / "big").write_bytes(big[:-1] + bytes([big[-1] ^ 1]))
    assert _digest(src, ["big"]) != before


def test_digest_leaves_out_ignored_and_excluded_files(tmp_path):
    src = _ctx(tmp_path, {"d/f": b"f", "d/skip.log": b"1", "d/ign": b"1"}, ignore=["d/ign"])
    before = _digest(src, ["d"], excludes=("*.log",))
    (Path(src.root) / "d" / "skip.log").write_bytes(b"2")
    (Path(src.root) / "d" / "ign").write_bytes(b"2")
    assert _digest(src, ["d"], excludes=("*.log",)) == before
    assert _digest(src, ["d"]) != before


def test_digest_of_an_archive_to_unpack_covers_its_bytes_and_destination(tmp_path):
    src = _ctx(tmp_path, {"a.tar": b""})
    _tar(Path(src.root) / "a.tar", "x", b"one")
    unpack = lambda host: True  # noqa: E731
    first = _digest(src, ["a.tar"], unpack=unpack)
    assert first != _digest(src, ["a.tar"]), "unpacked is not copied"
    assert first != _digest(src, ["a.tar"], unpack=unpack, dest="/e/")
    _tar(Path(src.root) / "a.tar", "x", b"two")
    assert _digest(src, ["a.tar"], unpack=unpack) != first


# -- cache keys -----------------------------------------------------------------------------------


def test_chain_keys_are_framed_and_ordered():
    """Keys are a sha256 hex chain: every part and its position count, and no two part lists
    that join to the same text collide."""
    k = chain("", ["COPY", "a b"])
    assert len(k) == 64 and int(k, 16) >= 0
    assert k == chain("", ["COPY", "a b"])
    assert k != chain("", ["COPY", "a", "b"]) != chain("", ["COPY a", "b"])
    assert k != chain("x", ["COPY", "a b"])
    assert chain("", ["a", "b"]) != chain("", ["b", "a"])
    assert chain("", ['a","b']) != chain("", ["a", "b"])
    assert chain("", ["é"]) != chain("", ["e"])
    assert chain(k, []) != chain("", [k])


def test_env_parts_are_sorted_pairs():
    assert env_parts({"B": "2", "A": "1=x", "C": ""}) == ["A=1=x", "B=2", "C="]
    assert env_parts({}) == []


# -- edges found by mutation runs -------------------------------------------------------------------


def test_the_copier_keeps_a_bounded_number_of_directories_open(tmp_path):
    """A tree of more directories than descriptors left to the process copies all the same: the
    directories resolved in the root are not all held open at once."""
    import resource

    files = {f"t/d{i:03}/f": b"x" for i in range(400)}
    src = _ctx(tmp_path, files)
    (tmp_path / "out").mkdir()
    in_use = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 300, hard))
    try:
        touched = _copy(src, tmp_path / "out", ["t"], "/x/").touched
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(touched) == 801 and (tmp_path / "out" / "x" / "d399" / "f").read_bytes() == b"x"


def test_hardlinked_copies_are_reported_as_written(tmp_path):
    src = _ctx(tmp_path, {"d/a": b"same"})
    os.link(Path(src.root) / "d" / "a", Path(src.root) / "d" / "b")
    assert sorted(_copy(src, tmp_path / "out", ["d"], "/t/").touched) == ["/t", "/t/a", "/t/b"]


def test_chmod_capital_x_sets_execute_on_directories_only(tmp_path):
    """chmod(1) semantics of ``X`` (BuildKit's --chmod accepts symbolic modes, moby/buildkit
    frontend/dockerfile docs "COPY --chmod"): execute for directories and for files that already
    have an execute bit."""
    src = _ctx(tmp_path, {"d/sub/f": b"f", "d/run": b"r"})
    os.chmod(Path(src.root) / "d" / "sub" / "f", 0o640)
    os.chmod(Path(src.root) / "d" / "run", 0o700)
    os.chmod(Path(src.root) / "d" / "sub", 0o640)
    out = tmp_path / "out"
    _copy(src, out, ["d"], "/t/", chmod=parse_chmod("a+X"))
    assert (_mode(out / "t" / "sub"), _mode(out / "t" / "sub" / "f"), _mode(out / "t" / "run")) == (0o751, 0o640, 0o711)


def test_an_unpacked_archive_keeps_whiteout_names_and_the_destination_itself(tmp_path):
    """ADD unpacks with go-archive's Unpack (moby/buildkit solver/llbsolver/file/unpack.go calls
    chrootarchive.Untar): no whiteout conversion unless the overlay format is asked for, and the
    archive's "." entry is skipped when the destination is a directory (moby/moby@b985e2313a86
    vendor/github.com/moby/go-archive/archive.go Unpack: ``if fi.IsDir() && hdr.Name == "."``)."""
    src = _ctx(tmp_path, {})
    with tarfile.open(Path(src.root) / "a.tar", "w") as tar:
        root = tarfile.TarInfo(".")
        root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o700, 1000
        tar.addfile(root)
        wh = tarfile.TarInfo(".wh.old")
        tar.addfile(wh, io.BytesIO(b""))
    out = _tree(tmp_path / "out", {"u/old": b"kept"})
    os.chmod(out / "u", 0o755)
    touched = _copy(src, out, ["a.tar"], "/u/", unpack=lambda host: True).touched
    assert (out / "u" / "old").read_bytes() == b"kept" and (out / "u" / ".wh.old").is_file()
    assert _mode(out / "u") == 0o755 and os.stat(out / "u").st_mtime != 1000
    assert touched == ["/u/"]


def test_an_ignored_file_stays_out_even_when_an_exception_names_a_path_below_it(tmp_path):
    """The context walk enters an excluded *directory* for a ``!`` pattern below it; an excluded
    file has nothing below and is left out (fsutil walker.go@0834f99b7b85: only a directory is
    walked into when exclusions exist)."""
    src = _ctx(tmp_path, {"f": b"file", "d/x": b"x", "g": b"g"}, ignore=["f", "d", "!f/x", "!d/x"])
    _copy(src, tmp_path / "out", ["."], "/c/")
    assert set(_files(tmp_path / "out")) == {"/c", "/c/g", "/c/d", "/c/d/x"}


def test_files_the_kernel_cannot_sendfile_are_copied_by_reading(tmp_path):
    """Some filesystems refuse sendfile (procfs answers EINVAL): their files are still copied, whole."""
    src = SourceRoot("/proc/self", is_context=False, description="proc")
    out = tmp_path / "out"
    _copy(src, out, ["status"], "/status")
    text = (out / "status").read_text()
    assert text.startswith("Name:\t") and f"\nPid:\t{os.getpid()}\n" in text and text.endswith("\n")
    assert _mode(out / "status") == _mode(Path("/proc/self/status"))


def test_parents_with_a_wildcard_pivot_keep_the_path_below_each_match(tmp_path):
    """BuildKit splits a --parents source at ``/./``: the part before is the source (wildcards
    resolved), the part after an include pattern below it (moby/buildkit@73ed6825c4b7
    frontend/dockerfile/dockerfile2llb/convert_copy.go: ``parent, pattern, ok := strings.Cut(src,
    "/./")``), so only the path below each match of the pivot is kept."""
    src = _ctx(tmp_path, {"a1/b/f": b"f", "a2/b/g": b"g", "c/d/e": b"e"})
    _copy(src, tmp_path / "o", ["a*/./b"], "/out/", parents=True)
    assert _files(tmp_path / "o") == {"/out": "dir", "/out/b": "dir", "/out/b/f": "file:f", "/out/b/g": "file:g"}
    touched = _copy(src, tmp_path / "w", ["."], "/all/", parents=True).touched
    assert "/all/c/d/e" in touched and all("/./" not in t and not t.endswith("/.") for t in touched)
    assert _files(tmp_path / "w")["/all/c/d/e"] == "file:e"
