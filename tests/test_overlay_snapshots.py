"""Snapshots of a mounted stage root read from its stacked dirs (``fs.overlaydiff``,
``builder.overlaysnapshot``), never from a walk of the root: the changes are those a
plain directory's snapshot reports, and the images those of ``--no-layer-store``.

* ``stack_changes`` on hand-made layer dirs, against what overlayfs' documented rules make of
  them (Documentation/filesystems/overlayfs.rst: whiteouts, opaque directories, a non-directory
  hiding what is below it);
* the same operations done on a real overlay mount (two upper dirs stacked) and on a plain copy
  watched by ``Snapshotter``: the same changes, and ``shown_at`` shows what the kernel shows;
* builds with COPY, ADD (a tar with a hard link and xattrs), WORKDIR and RUN in sequence, with and
  without ``--single-snapshot``: the layers and the unpacked image of the store build are those
  of the ``--no-layer-store`` build, and the store build took no baseline and walked no root.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pybuildless.fs.changes import Changes
from pybuildless.builder.overlaysnapshot import RECORD_LIMIT
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.overlaydiff import compared, seen_at, shown_at, stack_changes
from tests.buildkit import ROOT
from tests.test_stacked_run_uppers import assert_same_images, build, layer_blobs, listing, stacked_runs
from tests.test_stacked_run_uppers import base_image  # noqa: F401  (the fixture)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts (mknod 0/0) and trusted xattrs need root")


def _whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o20000 | 0o644, 0)


def _file(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def _same_meta(dst: Path, src: Path) -> None:
    st = os.lstat(src)
    os.chmod(dst, st.st_mode & 0o7777)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


@needs_root
def test_stack_changes_follow_overlayfs_lookup_rules(tmp_path):
    lower0, lower1, diff1, diff2 = (tmp_path / n for n in ("l0", "l1", "d1", "d2"))
    _file(lower0 / "etc/passwd")
    _file(lower0 / "gone/f")
    _file(lower0 / "hidden/h")  # hidden by a whiteout in l1: not there before
    _file(lower0 / "op/old")
    _file(lower0 / "keep/k")
    _file(lower0 / "tofile/x")
    _whiteout(lower1 / "hidden")
    _opaque(lower1 / "op")
    _file(lower1 / "op/new")
    for d in ("etc", "keep", "tofile"):
        (lower1 / d).mkdir()
        _same_meta(lower1 / d, lower0 / d)
    # step 1: a file in /etc, a tree removed, a name hidden below made anew, a directory made again
    _file(diff1 / "etc/passwd", "changed")
    _same_meta(diff1 / "etc", lower1 / "etc")  # copied up, its metadata unchanged
    _whiteout(diff1 / "gone")
    (diff1 / "hidden").mkdir()  # made over l1's whiteout: not opaque, the lookup stops at the whiteout
    _file(diff1 / "hidden/n")
    _opaque(diff1 / "keep")
    _file(diff1 / "keep/k2")
    _file(diff1 / "made/m")
    # step 2: what step 1 made is removed again (no whiteout: nothing below it), a directory becomes a
    # file, the opaque dir of l1 gets a new mode, a whiteout of a name nothing below has
    (diff2 / "op").mkdir(parents=True)
    os.chmod(diff2 / "op", 0o700)
    _file(diff2 / "tofile", "now a file")
    _whiteout(diff2 / "never-there")
    _whiteout(diff2 / "made")
    changes = stack_changes([str(lower0), str(lower1)], [str(diff1), str(diff2)])
    assert changes == Changes(
        added=("hidden", "hidden/n", "keep/k2"),
        modified=("etc/passwd", "keep", "op", "tofile"),
        deleted=("gone",),
        opaque=("keep",),
    )
    # the dirs above one snapshot only: step 2 against what step 1 left
    assert stack_changes([str(lower0), str(lower1), str(diff1)], [str(diff2)]) == Changes(
        modified=("op", "tofile"), deleted=("made",))
    # an ignored path and what is below it are never reported
    ignored = stack_changes([str(lower0), str(lower1)], [str(diff1)], IgnoreList.of(["/keep", "/etc"]))
    assert "keep" not in ignored.paths and "keep/k2" not in ignored.paths and "etc/passwd" not in ignored.paths
    # one path at a time, as held changes are compared later
    top_first = [str(diff2), str(diff1), str(lower1), str(lower0)]
    before = [str(lower1), str(lower0)]
    assert shown_at(before, "hidden/h") is None and shown_at(before, "op/old") is None
    assert shown_at(top_first, "op/new").path == str(lower1 / "op/new")
    assert compared("keep", seen_at(before, "keep"), seen_at(top_first, "keep")) == Changes(
        modified=("keep",), opaque=("keep",))
    assert compared("etc", seen_at(before, "etc"), seen_at(top_first, "etc")).empty
    assert compared("gone", seen_at(before, "gone"), seen_at(top_first, "gone")) == Changes(deleted=("gone",))
    assert compared("etc/passwd", seen_at(before, "etc/passwd"), seen_at(top_first, "etc/passwd")) == Changes(
        modified=("etc/passwd",))
    assert compared("tofile/x", seen_at(before, "tofile/x"), seen_at(top_first, "tofile/x")) == Changes(
        deleted=("tofile/x",))


# Two steps on a real overlay (the second stacked on the first's upper dir) and on a plain copy of
# the same tree watched by a Snapshotter; printed as JSON. Run in its own mount namespace.
KERNEL_SCRIPT = r"""
import json, os, shutil, stat, subprocess, sys
from pathlib import Path
from pybuildless.fs.overlaydiff import shown_at, stack_changes
from pybuildless.fs.snapshot import Snapshotter
from pybuildless.sandbox import _linux

top = Path(sys.argv[1])
lowers = [str(top / "l0"), str(top / "l1")]
mnt, plain = top / "mnt", top / "plain"
mnt.mkdir()
STEPS = [
    "echo new > d1/new && rm d1/sub/g && rm -rf keep && mkdir keep && echo n > keep/n && "
    "touch -d @1500000000 dmeta && mkdir d2/made && echo 1 > n1 && ln n1 n2 && chmod 600 d1/f && mkdir -p deep/a/b",
    "rm -rf d1/sub && rm f_to_dir && mkdir f_to_dir && echo z > f_to_dir/z && rm -rf dir_to_file && "
    "echo f > dir_to_file && mkdir d2/h && chmod 700 op && rm -rf d2/made && ln n1 n3 && echo again >> n2 && "
    "rm -rf keep && mkdir keep && echo k > deep/a/b/k",
]

def mount(lowers, upper=None, work=None):
    opts = "lowerdir=" + ":".join(reversed(lowers))
    if upper:
        opts += f",upperdir={upper},workdir={work},index=off,metacopy=off,redirect_dir=nofollow"
    _linux.mount("overlay", str(mnt), "overlay", 0 if upper else _linux.MS_RDONLY, opts)

mount(lowers)
shutil.copytree(mnt, plain, symlinks=True)
_linux.umount(str(mnt))
walked = Snapshotter(plain)
walked.baseline()
diffs = []
for n, script in enumerate(STEPS):
    upper, work = top / f"u{n}", top / f"w{n}"
    upper.mkdir(); work.mkdir()
    mount([*lowers, *diffs], upper, work)
    subprocess.run(["sh", "-c", script], cwd=mnt, check=True)
    _linux.umount(str(mnt))
    diffs.append(str(upper))
    # on the plain copy the new "keep" is made before the old one goes: a directory made right
    # after its namesake was removed may get the freed inode number back, and then it is the same
    # directory to a walk (the Snapshotter keys directories by inode), not one made again
    subprocess.run(["sh", "-c", script.replace("rm -rf keep && mkdir keep",
                                               "mkdir keep.new && rm -rf keep && mv keep.new keep")],
                   cwd=plain, check=True)
from_dirs = stack_changes(lowers, diffs)
from_walk = walked.take()
walked.close()
# what shown_at shows is what the kernel shows through a mount of the whole stack
mount([*lowers, *diffs])
views = []
for dirpath, dirnames, filenames in os.walk(mnt):
    for name in dirnames + filenames:
        rel = os.path.relpath(os.path.join(dirpath, name), mnt)
        kernel = os.lstat(os.path.join(mnt, rel))
        shown = shown_at(list(reversed([*lowers, *diffs])), rel)
        views.append([rel, shown is not None and stat.S_IFMT(shown.st.st_mode) == stat.S_IFMT(kernel.st_mode)
                      and shown.st.st_mtime_ns == kernel.st_mtime_ns and shown.st.st_mode == kernel.st_mode])
_linux.umount(str(mnt))
out = {k: {"paths": sorted(c.paths), "deleted": sorted(c.deleted), "opaque": sorted(c.opaque)}
       for k, c in (("dirs", from_dirs), ("walk", from_walk))}
out["views"] = views
print(json.dumps(out))
"""


@needs_root
def test_stacked_dirs_of_a_real_overlay_give_what_a_watched_plain_copy_gives(tmp_path):
    lower0, lower1 = tmp_path / "l0", tmp_path / "l1"
    for rel in ("d1/f", "d1/sub/g", "d2/h", "keep/k", "f_to_dir", "dir_to_file/c", "op/old", "deep/x"):
        _file(lower0 / rel)
    (lower0 / "dmeta").mkdir()
    _opaque(lower1 / "op")
    _file(lower1 / "op/new")
    _whiteout(lower1 / "d2/h")
    _same_meta(lower1 / "d2", lower0 / "d2")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", KERNEL_SCRIPT,
                           str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dirs"] == out["walk"]
    # the expected changes, by overlayfs' rules and the snapshot's (an independent reading of STEPS)
    assert out["dirs"]["deleted"] == ["d1/sub"] and out["dirs"]["opaque"] == ["keep"]
    assert {"d2/h", "f_to_dir/z", "n1", "n2", "n3", "deep/a/b/k", "keep", "d1/f", "dmeta"} <= set(
        out["dirs"]["paths"])
    assert not any(p.startswith("d2/made") for p in out["dirs"]["paths"])
    assert out["views"] and all(ok for _, ok in out["views"]), [rel for rel, ok in out["views"] if not ok]


CONTEXT_TREE = {"tree/a.txt": "a\n", "tree/sub/b.txt": "b\n", "tree/deep/new.txt": "deep\n"}

STAGES = """\
FROM {base} AS work
COPY ctx.txt /opt/keep/k
COPY many/ /srv/many/
COPY tree/ /srv/tree/
WORKDIR /opt/app/sub/w
RUN echo appended >> /etc/passwd && mkdir /etc/conf.d
RUN true
ADD archive.tar /
COPY ctx.txt /etc/conf.d/x
COPY --chmod=600 ctx.txt /opt/meta
RUN rm -rf /srv/tree && mkdir -p /srv/tree && echo x > /srv/tree/x
RUN --mount=type=tmpfs,target=/newdir/mnt echo x > /newdir/file
RUN --mount=type=tmpfs,target=/srv/tree/t rm /srv/tree/x
WORKDIR /srv/tree/w2
RUN ln /opt/added/a /opt/added/a3 && rm /opt/added/b /usr/share/doc/d
COPY ctx.txt /opt/added/a
RUN touch -d @1600000000 /opt/keep && chmod 700 /opt/app && echo later >> /etc/group
COPY tree/ /opt/app/sub/{last}

FROM {base}
COPY --from=work /opt /opt-copied
RUN cat /opt-copied/added/a3 > /seen
"""
LAST_RUN = "\nRUN rm -rf /opt/app/sub && echo gone > /opt/app/sub"  # a directory becomes a file


def _archive() -> bytes:
    """A tar ADD unpacks: xattrs on an existing directory and a new file, and a hard link."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in (("opt/keep", tarfile.DIRTYPE, {"SCHILY.xattr.user.tag": "v1"}),
                                  ("opt/added", tarfile.DIRTYPE, {}),
                                  ("opt/added/a", tarfile.REGTYPE, {"SCHILY.xattr.user.note": "hello"}),
                                  ("opt/added/b", tarfile.LNKTYPE, {})):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.pax_headers = kind, 0o755, 1650000000, extra
            data = b"a\n" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            if kind == tarfile.LNKTYPE:
                info.linkname = "opt/added/a"
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _build(tmp_path: Path, registry, name: str, dockerfile: str, *flags: str) -> tuple[Path, str]:
    ctx = tmp_path / f"ctx-{name}"  # build() adds the Dockerfile and ctx.txt
    ctx.mkdir()
    (ctx / "archive.tar").write_bytes(_archive())
    for rel, text in CONTEXT_TREE.items():
        _file(ctx / rel, text)
    for n in range(RECORD_LIMIT + 20):  # more than a snapshot records: the upper dir is stacked
        _file(ctx / f"many/f{n:03}", str(n))
    return build(tmp_path, registry, name, dockerfile, *flags, cache=tmp_path / "xdg")


@pytest.mark.parametrize("target,single", [("work", False), (None, False), (None, True)])
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_copy_add_workdir_and_run_on_a_mounted_root_give_the_plain_images(tmp_path, registry, base_image, target,
                                                                         single):
    # --single-snapshot: one snapshot at the end, over every dir stacked since FROM; a lower file whose
    # hard link partner is removed keeps its link count in a stored layer, not in a directory (whose
    # one walk then reports it), so that step is left out there
    dockerfile = STAGES.format(base=base_image, last="" if single else LAST_RUN)
    flags = (["--target", target] if target else []) + (["--single-snapshot"] if single else [])
    plain, _ = _build(tmp_path, registry, "plain", dockerfile, "--no-layer-store", *flags)
    stored, log = _build(tmp_path, registry, "stored", dockerfile, *flags)
    assert "an overlay of 3 stored layer(s)" in log
    assert "walk the root" not in log and " and applied in " not in log
    snapshots = re.findall(r"snapshot of \S+ (from \d+ dir\(s\) over \d+|as the sandbox read it)", log)
    assert "as the sandbox read it over what was written before it" in log or single
    # one per step that writes files (18 and 2 in the two stages), none walking the root; under
    # --single-snapshot the final stage takes one for all its steps
    assert len(snapshots) == (18 if target else 17 + 1 if single else 18 + 2), snapshots
    # the root is mounted again for each RUN's dir and once for the big COPY; the other COPY, ADD and
    # WORKDIR steps are recorded by their snapshots, the upper dir kept
    assert single or log.count("remounted in") == stacked_runs(log) + 1
    # the RUN writing into the directories made for its mount point: its dir and theirs read together
    assert single or re.search(r"from 3 dir\(s\) over \d+", log)
    assert_same_images(tmp_path, plain, stored)
    if not target:
        return
    layers = [dict((m[0], m) for m in listing(blob)) for blob in layer_blobs(stored)]
    added = next(layer for layer in layers if "opt/added/b" in layer)
    assert added["opt/added/b"][1] == tarfile.LNKTYPE and added["opt/added/b"][7] == "opt/added/a"
    assert ("SCHILY.xattr.user.note", "hello") in added["opt/added/a"][8]
    assert ("SCHILY.xattr.user.tag", "v1") in added["opt/keep"][8]
    linked = next(layer for layer in layers if "opt/added/a3" in layer)
    assert linked["opt/added/a3"][7] == "opt/added/a" and "opt/added/.wh.b" in linked
    assert "srv/tree/.wh..wh..opq" in next(layer for layer in layers if "srv/tree/x" in layer)
    # the sandbox's mount points for /etc/hosts and /etc/resolv.conf, made and removed around each RUN,
    # leave /etc with a new mtime, which RUN true's snapshot does not look at; ADD to / looks at the
    # whole root and reports it, in both builds: the change was held until a snapshot looked at /etc
    assert "etc" in added and not any(name.startswith("etc/") for name in added)


CACHED = """\
FROM {base}
RUN echo one > /r1 && rm /opt/meta
COPY ctx.txt /opt/c
RUN cat /opt/c > /r2 && rm -rf /srv/tree && echo more >> /opt/keep/k
COPY ctx.txt /opt/app/sub/d
RUN rm /opt/c && mkdir /srv/tree
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_cached_layers_applied_to_a_mounted_root_become_its_state(tmp_path, registry, base_image):
    # RUN layers are not cached (--cache-run-layers=false), COPY layers are: on the second build each
    # COPY comes from the cache after a RUN laid the root, is applied onto it and taken as its state
    dockerfile = CACHED.format(base=base_image)
    # (the builds' SOURCE_DATE_EPOCH dates the cache entries in 2023: a long --cache-ttl keeps them)
    flags = ["--cache", "--cache-repo", registry.ref("ovlsnap/cache"), "--cache-run-layers=false",
             "--cache-ttl", "100000h"]
    (tmp_path / "fill").mkdir()
    build(tmp_path / "fill", registry, "fill", dockerfile, *flags, cache=tmp_path / "xdg")
    plain, _ = build(tmp_path, registry, "plain", dockerfile, "--no-layer-store", *flags, cache=tmp_path / "xdg")
    stored, log = build(tmp_path, registry, "stored", dockerfile, *flags, cache=tmp_path / "xdg")
    assert len(re.findall(r"STEP \d+/\d+: COPY", log)) == 2 and log.count("from cache") == 2, log
    assert "an overlay of 3 stored layer(s)" in log and "walk the root" not in log
    assert len(re.findall(r"snapshot of \S+ ", log)) == 3  # the RUNs; the cached layers are no snapshot's
    assert_same_images(tmp_path, plain, stored)
    final = dict((m[0], m) for m in listing(layer_blobs(stored)[-1]))
    assert "opt/.wh.c" in final and "srv/tree" in final
