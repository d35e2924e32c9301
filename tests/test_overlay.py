"""Overlay snapshots: reading a RUN's diff from an overlayfs upper dir (``pybuildless.fs.overlay``),
applying it onto the stage root, and RUN on an overlay in the chroot sandbox (as root and in a
user namespace), checked against the stat-walk snapshots on twin roots."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pybuildless.fs.changes import Changes
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.extract import extract_layer
from pybuildless.fs.layer import layer_entries, write_layer
from pybuildless.fs.overlay import apply_upper, combined, overlay_changes, snapshot_tops, without_ignored
from pybuildless.fs.snapshot import Snapshotter
from pybuildless.sandbox import ChrootSandbox
from pybuildless.sandbox.base import RunResult
from pybuildless.sandbox.overlay_mount import OverlaySupport, mount_options
from tests.buildkit import ROOT, tree_of
from tests.test_sandbox import ENV, ROOT_USER, make_busybox_root

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts (mknod 0/0) and trusted xattrs need root")


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def mark_opaque(path: Path, attr: str = "trusted.overlay.opaque") -> None:
    os.setxattr(path, attr, b"y")


def tree_with_links(root: Path) -> dict:
    """tree_of plus which names share an inode (hard links must survive)."""
    tree = tree_of(root)
    inodes: dict[int, list[str]] = {}
    for rel in tree:
        st = os.lstat(root / rel.lstrip("/"))
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault(st.st_ino, []).append(rel)
    return {"tree": tree, "links": sorted(sorted(v) for v in inodes.values() if len(v) > 1)}


# --- overlay_changes on hand-made upper dirs --------------------------------------------------


@pytest.fixture
def lower_upper(tmp_path: Path) -> tuple[Path, Path]:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("etc", "redo/sub", "gone/deep", "keep"):
        (lower / d).mkdir(parents=True)
    (lower / "etc/passwd").write_text("root\n")
    (lower / "etc/hosts").write_text("h\n")
    (lower / "redo/sub/old").write_text("o\n")
    (lower / "gone/deep/f").write_text("f\n")
    (lower / "keep/k").write_text("k\n")
    upper.mkdir()
    return lower, upper


def copy_up_dir(lower: Path, upper: Path, rel: str) -> Path:
    """What overlayfs does before changing something below ``rel``: the same dir, same metadata."""
    src, dst = lower / rel, upper / rel
    dst.mkdir(parents=True, exist_ok=True)
    st = os.lstat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.chown(dst, st.st_uid, st.st_gid)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return dst


@needs_root
def test_whiteouts_opaque_dirs_added_and_modified(lower_upper) -> None:
    lower, upper = lower_upper
    etc = copy_up_dir(lower, upper, "etc")
    (etc / "passwd").write_text("root\nuser\n")  # modified
    (etc / "new.conf").write_text("n\n")  # added
    whiteout(etc / "hosts")
    whiteout(upper / "gone")
    whiteout(upper / "never-existed")  # nothing below to hide: no whiteout in the layer
    (upper / "redo").mkdir()
    mark_opaque(upper / "redo")
    (upper / "redo/new").write_text("new\n")
    (upper / "fresh/a").mkdir(parents=True)
    (upper / "fresh/a/b").write_text("b")
    os.utime(etc, ns=(1, 2))  # the directory's mtime moved: it is modified itself
    changes = overlay_changes(upper, lower=lower)
    assert changes.deleted == ("etc/hosts", "gone")
    assert changes.opaque == ("redo",)
    assert changes.added == ("etc/new.conf", "fresh", "fresh/a", "fresh/a/b", "redo/new")
    assert changes.modified == ("etc", "etc/passwd", "redo")
    # the layer: opaque marker in redo/, whiteouts, no entries below the deleted dir
    names = [rel for _, rel in layer_entries(changes)]
    assert "redo/.wh..wh..opq" in names and ".wh.gone" in names and "etc/.wh.hosts" in names
    assert not any(n.startswith("gone/") for n in names) and ".wh.never-existed" not in names


@needs_root
def test_directories_only_copied_up_are_not_reported(lower_upper) -> None:
    lower, upper = lower_upper
    keep = copy_up_dir(lower, upper, "keep")
    (keep / "k").write_text("changed\n")
    copy_up_dir(lower, upper, "keep")  # overlayfs puts the parent's times back after a copy-up
    changes = overlay_changes(upper, lower=lower)
    assert changes.modified == ("keep/k",) and changes.added == ()
    # without the lower dir nothing can be compared: everything outside opaque dirs is "modified"
    assert overlay_changes(upper).modified == ("keep", "keep/k")


def test_user_xattr_opaque_marker_as_in_a_user_namespace(lower_upper) -> None:
    lower, upper = lower_upper
    (upper / "redo").mkdir()
    try:
        mark_opaque(upper / "redo", "user.overlay.opaque")
    except OSError as exc:
        pytest.fail(f"the test file system must support user xattrs: {exc}")
    (upper / "redo/x").write_text("x")
    changes = overlay_changes(upper, lower=lower)
    assert changes.opaque == ("redo",) and changes.added == ("redo/x",)


@needs_root
def test_ignored_paths_are_left_out(lower_upper) -> None:
    lower, upper = lower_upper
    (upper / "var/run").mkdir(parents=True)
    (upper / "var/run/pid").write_text("1")
    (upper / "app").write_text("a")
    whiteout(upper / "keep")
    ignore = IgnoreList.of(["/var/run"])
    changes = overlay_changes(upper, lower=lower, ignore=ignore)
    assert "var/run/pid" not in changes.paths and "app" in changes.paths and changes.deleted == ("keep",)
    unfiltered = overlay_changes(upper, lower=lower)
    assert "var/run/pid" in unfiltered.paths
    assert without_ignored(unfiltered, ignore) == changes


def test_snapshot_tops_skip_parents_and_covered_paths() -> None:
    changes = Changes(added=("usr/new", "usr/new/a", "usr/new/a/b", "usr/lib/x.so"),
                      modified=("usr", "usr/lib", "etc", "redo"), deleted=("var/gone",), opaque=("redo",))
    # usr and usr/lib only carry changes below them; usr/new's walk covers its children;
    # etc changed itself (a chmod) and has nothing below it in the change: it must be looked at
    assert snapshot_tops(changes) == ["etc", "redo", "usr/lib/x.so", "usr/new", "var/gone"]


def test_combined_keeps_added_over_modified() -> None:
    upper = Changes(added=("app/x",), modified=("etc/passwd",), deleted=("old",), opaque=())
    extra = Changes(added=("app",), modified=("app/x",), deleted=(), opaque=("redo",))
    both = combined(upper, extra)
    assert both == Changes(("app", "app/x"), ("etc/passwd",), ("old",), ("redo",))


# --- apply_upper ----------------------------------------------------------------------------


@needs_root
def test_apply_upper_moves_everything_onto_the_root(lower_upper) -> None:
    lower, upper = lower_upper
    old_redo_ino = os.lstat(lower / "redo").st_ino
    etc = copy_up_dir(lower, upper, "etc")
    (etc / "passwd").write_text("root\nuser\n")
    whiteout(etc / "hosts")
    whiteout(upper / "gone")
    (upper / "redo").mkdir(mode=0o750)
    mark_opaque(upper / "redo")
    (upper / "redo/new").write_text("new\n")
    (upper / "suid").write_text("s")
    os.chmod(upper / "suid", 0o4755)
    os.link(upper / "suid", upper / "suid-link")
    os.symlink("etc/passwd", upper / "link")
    (upper / "keep").write_text("a file where a directory was\n")
    os.setxattr(upper / "suid", "trusted.overlay.origin", b"\x00")
    os.setxattr(upper / "suid", "user.kept", b"v")
    os.chown(upper / "redo", 1000, 1001)
    os.setxattr(lower / "etc", "user.removed-in-run", b"1")
    os.setxattr(etc, "user.set-in-run", b"2")  # (the copy-up did not carry user.removed-in-run)
    os.setxattr(etc, "trusted.overlay.impure", b"y")
    os.utime(etc, ns=(5_000_000_000, 7_000_000_000))
    count = apply_upper(upper, lower)
    assert count >= 9
    assert sorted(os.listdir(lower)) == ["etc", "keep", "link", "redo", "suid", "suid-link"]
    assert sorted(os.listdir(lower / "etc")) == ["passwd"] and (lower / "etc/passwd").read_text() == "root\nuser\n"
    assert os.stat(lower / "etc").st_mtime_ns == 7_000_000_000
    assert os.listxattr(lower / "etc") == ["user.set-in-run"]
    assert sorted(os.listdir(lower / "redo")) == ["new"]
    redo = os.lstat(lower / "redo")
    assert redo.st_ino != old_redo_ino and (redo.st_uid, redo.st_gid, stat.S_IMODE(redo.st_mode)) == (1000, 1001, 0o750)
    assert stat.S_IMODE(os.lstat(lower / "suid").st_mode) == 0o4755
    assert os.lstat(lower / "suid").st_ino == os.lstat(lower / "suid-link").st_ino
    assert os.readlink(lower / "link") == "etc/passwd" and (lower / "keep").is_file()
    assert os.listxattr(lower / "suid") == ["user.kept"]
    assert not os.listxattr(lower / "redo")  # the opaque marker belongs to the mount, not the image


@needs_root
def test_apply_upper_moves_a_new_tree_whole_and_drops_overlay_xattrs(lower_upper) -> None:
    lower, upper = lower_upper
    (upper / "newd/sub").mkdir(parents=True)
    (upper / "newd/moved").write_text("m")
    (upper / "newd/sub/k").write_text("k")
    os.link(upper / "newd/moved", upper / "newd/sub/link")
    os.setxattr(upper / "newd", "trusted.overlay.impure", b"y")
    os.setxattr(upper / "newd/moved", "trusted.overlay.origin", b"\x00")
    os.setxattr(upper / "newd/sub/k", "trusted.overlay.origin", b"\x00")
    os.setxattr(upper / "newd/sub/k", "user.keep", b"1")
    assert apply_upper(upper, lower) == 5
    assert sorted(os.listdir(lower / "newd")) == ["moved", "sub"] and not (upper / "newd").exists()
    assert os.lstat(lower / "newd/moved").st_ino == os.lstat(lower / "newd/sub/link").st_ino
    assert overlay_xattrs_below(lower) == [] and os.listxattr(lower / "newd/sub/k") == ["user.keep"]


# --- RUN on an overlay in the sandbox, against the stat walk on a twin root ----------------------

SCRIPTS = {
    "files": "echo hi > /new && echo more >> /etc/passwd && rm /etc/group && mkdir -p /opt/a/b && echo x > /opt/a/b/c",
    "recreate": "rm -rf /data && mkdir /data && echo fresh > /data/fresh && rm /keep/k",
    "links_and_modes": "echo d > /tmp/a && ln /tmp/a /tmp/b && cp /bin/busybox /suid && chmod 4755 /suid && "
                       "chown 1000:1000 /tmp/a && ln -s /tmp/a /sym && chmod 700 /keep",
    "replace_types": "rm -rf /keep && echo file > /keep && rm /data/sub/f && rmdir /data/sub && ln -s /etc /data/sub",
    "nothing": "true",
    # lower files moved into new directories: copied up (with the overlay's origin xattr) and renamed
    "move_into_new": "mkdir -p /newd/sub && mv /data/old /newd/moved && mv /keep/k /newd/sub/k",
}


def overlay_xattrs_below(root: Path) -> list[str]:
    found = []
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            found += [f"{p}: {n}" for n in os.listxattr(p) if ".overlay." in n]
    return found


def _seed(root: Path) -> Path:
    make_busybox_root(root)
    # present already, so the sandbox creating (and removing) its mount points does not
    # move /etc's mtime, which the stat walk would report
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/resolv.conf").write_text("")
    (root / "data/sub").mkdir(parents=True)
    (root / "data/sub/f").write_text("f")
    (root / "data/old").write_text("o")
    (root / "keep").mkdir()
    (root / "keep/k").write_text("k")
    return root


def _run(sandbox: ChrootSandbox, script: str) -> RunResult:
    out = io.BytesIO()
    result = sandbox.run(["/bin/sh", "-c", script], env=ENV, cwd="/", user=ROOT_USER, stdout=out)
    assert result.exit_code == 0, out.getvalue()
    return result


def _layer(changes: Changes) -> list[tuple[str, str]]:
    return layer_entries(changes)


@pytest.fixture(scope="module")
def overlay_usable(tmp_path_factory) -> bool:
    if os.geteuid() != 0:
        pytest.skip("the chroot sandbox needs root")
    support = OverlaySupport.probe(tmp_path_factory.mktemp("probe"))
    assert support.usable, f"overlay mounts must work as root on this kernel: {support.reason}"
    return True


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_overlay_run_matches_the_stat_walk(tmp_path, overlay_usable, name) -> None:
    walk_root, ovl_root = _seed(tmp_path / "walk" / "root"), _seed(tmp_path / "ovl" / "root")
    walked = Snapshotter(walk_root)  # inotify: tells a recreated dir even when its inode number is reused
    walked.baseline()
    tracked = Snapshotter(ovl_root, watch=False)
    tracked.baseline()
    with ChrootSandbox(walk_root) as plain, ChrootSandbox(ovl_root, overlay=True) as ovl:
        assert ovl.overlay and not plain.overlay
        assert _run(plain, SCRIPTS[name]).changes is None
        from_upper = _run(ovl, SCRIPTS[name]).changes
        assert from_upper is not None
    from_walk = walked.take()
    assert tree_with_links(ovl_root) == tree_with_links(walk_root)
    # the layers, applied to the root as it was, give that same tree
    for changes, source, kind in ((from_upper, ovl_root, "ovl"), (from_walk, walk_root, "walk")):
        layer = write_layer(source, changes, tmp_path / f"layer-{kind}")
        fresh = _seed(tmp_path / f"applied-{kind}" / "root")
        with layer.open_compressed() as blob:
            extract_layer(blob, fresh)
        assert tree_with_links(fresh) == tree_with_links(ovl_root), kind
    if from_walk.opaque == from_upper.opaque:  # else the walk missed a recreation (inode number reused)
        assert _layer(from_upper) == _layer(from_walk)
    # the tracked snapshotter adopts the applied paths: a full walk then finds nothing new
    adopted = tracked.take_paths(snapshot_tops(from_upper))
    assert adopted.deleted == from_upper.deleted and set(adopted.paths) <= set(from_upper.paths)
    assert tracked.take().empty
    assert overlay_xattrs_below(ovl_root) == []
    assert sorted(os.listdir(tmp_path / "ovl")) == ["root"], "upper and work dirs are removed"


def test_writing_through_a_lower_hard_link_breaks_it_as_docker_does(tmp_path, overlay_usable) -> None:
    root = _seed(tmp_path / "root")
    (root / "shared").write_text("data\n")
    os.link(root / "shared", root / "shared2")
    with ChrootSandbox(root, overlay=True) as sandbox:
        assert _run(sandbox, "echo replaced > /shared").changes.paths == ("shared",)
    assert (root / "shared").read_text() == "replaced\n" and (root / "shared2").read_text() == "data\n"
    assert os.lstat(root / "shared").st_ino != os.lstat(root / "shared2").st_ino


def test_failed_probe_falls_back_to_writing_into_the_root(tmp_path, overlay_usable, caplog) -> None:
    odd = tmp_path / "a,b"  # a comma cannot be written in overlay mount options
    root = _seed(odd / "root")
    with caplog.at_level("INFO", logger="pybuildless.sandbox.chroot"):
        sandbox = ChrootSandbox(root, overlay=True)
    with sandbox:
        assert not sandbox.overlay
        assert _run(sandbox, "echo x > /x").changes is None
    assert (root / "x").read_text() == "x\n"
    assert "overlay snapshots off" in caplog.text and "mount options" in caplog.text
    assert not OverlaySupport.probe(tmp_path, tmp_path / "root:x").usable  # the lower dir's path too


def test_a_run_overlay_is_volatile_so_its_unmount_syncs_nothing(tmp_path, overlay_usable) -> None:
    # Without volatile, the overlay syncs the upper dir's whole filesystem as the RUN's mount
    # namespace goes (~110 ms per 50 MB of dirty page cache, paid before the step could end).
    root = _seed(tmp_path / "root")
    out = io.BytesIO()
    with ChrootSandbox(root, overlay=True) as sandbox:
        assert sandbox.overlay
        result = sandbox.run(["/bin/sh", "-c", "cat /proc/self/mountinfo"], env=ENV, cwd="/", user=ROOT_USER,
                             stdout=out)
    assert result.exit_code == 0, out.getvalue()
    root_mounts = [line.split(" - ", 1)[1].split() for line in out.getvalue().decode().splitlines()
                   if line.split()[4] == "/"]
    assert root_mounts and root_mounts[-1][0] == "overlay", root_mounts
    options = root_mounts[-1][2].split(",")
    assert "volatile" in options or "fsync=volatile" in options, options  # newer kernels show fsync=volatile


def test_mount_options_keep_the_upper_dir_self_contained() -> None:
    opts = mount_options("/l", "/u", "/w", userxattr=True).split(",")
    assert opts[:3] == ["lowerdir=/l", "upperdir=/u", "workdir=/w"]
    assert {"metacopy=off", "redirect_dir=nofollow", "index=off", "userxattr"} <= set(opts)
    assert "userxattr" not in mount_options("/l", "/u", "/w", userxattr=False)


USERNS_SCRIPT = """
import io, json, os, sys
from pathlib import Path
from pybuildless.sandbox import ChrootSandbox
from tests.test_overlay import SCRIPTS, _seed, tree_with_links
from tests.test_sandbox import ENV, ROOT_USER
base = Path(sys.argv[1])
out = {}
for kind, overlay in (("walk", False), ("ovl", True)):
    root = _seed(base / kind / "root")
    with ChrootSandbox(root, overlay=overlay) as sb:
        out[kind + "_overlay"] = sb.overlay
        buf = io.BytesIO()
        result = sb.run(["/bin/sh", "-c", SCRIPTS["recreate"] + " && " + SCRIPTS["files"]], env=ENV, cwd="/",
                        user=ROOT_USER, stdout=buf)
        assert result.exit_code == 0, buf.getvalue()
        changes = result.changes
        out[kind + "_changes"] = None if changes is None else [list(changes.deleted), list(changes.opaque)]
    out[kind + "_tree"] = tree_with_links(root)
    out["xattrs"] = sorted(n for p in root.rglob("*") if not p.is_symlink() for n in os.listxattr(p))
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs unshare --map-root-user as root")
def test_overlay_in_a_user_namespace_uses_user_xattrs(tmp_path, overlay_usable) -> None:
    """A user namespace (kernel >= 5.11): the overlay takes the userxattr option, opaque dirs
    carry user.overlay.opaque, and none of the overlay's xattrs reach the root."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--", sys.executable, "-c", USERNS_SCRIPT,
                           str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = json.loads(proc.stdout)
    assert out["ovl_overlay"] is True and out["walk_overlay"] is False
    assert out["ovl_changes"] == [["etc/group", "keep/k"], ["data"]]
    assert out["ovl_tree"] == out["walk_tree"]
    assert not any(".overlay." in name for name in out["xattrs"])


# --- whole builds: overlay snapshots against the stat walk (the stage loop takes the upper's diff) ---

E2E_DOCKERFILE = """\
FROM {base} AS base
RUN mkdir -p /keep /gone/sub /redo /etc/app && echo a > /gone/sub/f && echo old > /redo/old && echo k > /keep/k \\
    && echo conf > /etc/app/conf && echo data > /shared && ln /shared /shared2
FROM base AS work
RUN rm -rf /gone && rm /keep/k && rm -rf /redo && mkdir /redo && echo new > /redo/new
RUN echo data > /a && ln /a /b && cp /bin/busybox /suid && chmod 4755 /suid && chown 1000:1000 /a && \\
    chmod 700 /keep && ln -s /a /link && rm /etc/app/conf && rmdir /etc/app
RUN test -f /redo/new && test ! -e /gone && cat /a /b > /both && rm -rf /redo && echo file > /redo
COPY --from=base /etc/passwd /copied-passwd
RUN rm /copied-passwd && touch /copied-later
WORKDIR /w/d
RUN rm -rf /w
RUN true
FROM base
COPY --from=work /both /suid /out/
RUN ls -la /out > /listing
"""


def _build(tmp_path: Path, registry, base: str, name: str, *flags: str):
    from tests.buildkit import executor, unpack, write_context

    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": E2E_DOCKERFILE.format(base=base)})
    ref = registry.ref(f"overlay/{name}:1")
    proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
                    "--target", "work", "-v", "debug", *flags, cwd=tmp_path)
    work = unpack(f"docker://{ref}", tmp_path / f"u-{name}")
    return work, proc.stderr.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_builds_with_overlay_snapshots_match_the_stat_walk(tmp_path, registry, busybox_image) -> None:
    walked, walk_log = _build(tmp_path, registry, busybox_image, "walk", "--no-overlay-snapshots")
    ovl, ovl_log = _build(tmp_path, registry, busybox_image, "ovl", "--overlay-snapshots")
    assert "overlay upper dir" in ovl_log and "overlay upper dir" not in walk_log
    assert tree_with_links(ovl.rootfs) == tree_with_links(walked.rootfs)
    tree = ovl.tree()
    assert "/gone" not in tree and "/keep/k" not in tree and tree["/redo"][0] == "f"
    assert tree["/suid"][1] == 0o4755 and tree["/a"][2:4] == (1000, 1000) and tree["/keep"][1] == 0o700
    assert (ovl.rootfs / "both").read_text() == "data\ndata\n" and "/etc/app" not in tree
    assert os.lstat(ovl.rootfs / "a").st_ino == os.lstat(ovl.rootfs / "b").st_ino
    assert "/copied-passwd" not in tree and "/copied-later" in tree
    # RUN makes a missing WORKDIR in the root before the step, outside the overlay: still in the layer
    assert tree["/w/d"][0] == "d"
    assert len(ovl.manifest["layers"]) == len(walked.manifest["layers"])
