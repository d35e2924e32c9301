"""The local store of unpacked layers (pybuildless.store): unpack once and reuse, whiteouts in
overlay form (checked by a real overlay mount and by a copy onto a plain directory, both against
applying the layer tars in order), concurrent builds, a crash mid-unpack, damage on disk, LRU gc."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuildless.fs.extract import extract_layer
from pybuildless.image.descriptor import Digest
from pybuildless.store.copy import copy_layers
from pybuildless.store.gc import collect, parse_size, prune
from pybuildless.store.layers import LayerStore, StoreError
from pybuildless.store.stack import plan_stack

REPO = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts as char 0/0 in trusted form and overlay mounts")


# -- layers built here, digests computed here ---------------------------------------------------

def make_tar(entries: list[tuple]) -> bytes:
    """entries: (name, kind, extra) with kind f (extra = bytes), d, l (target), h (target), mtime 1000+i."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, (name, kind, *rest) in enumerate(entries):
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000 + i
            info.uid, info.gid = 1000 + i % 3, 2000 + i % 2
            extra = rest[0] if rest else None
            if kind == "f":
                data = extra if extra is not None else name.encode()
                info.size, info.mode = len(data), 0o640
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o751
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            tar.addfile(info)
    return buf.getvalue()


@dataclass(frozen=True)
class BlobLayer:
    """A gzip layer blob in a file; every open is counted in ``opens`` (a file, so child processes count too)."""

    path: Path
    digest: Digest
    diff_id: Digest
    size: int
    opens: Path
    delay: float = 0.0  # seconds slept per 64 KiB read: a slow download
    media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"

    def open_compressed(self):
        with open(self.opens, "a") as f:
            f.write(f"{os.getpid()}\n")
        f = open(self.path, "rb")
        return _Slow(f, self.delay) if self.delay else f

    def open_count(self) -> int:
        return len(self.opens.read_text().split()) if self.opens.exists() else 0


class _Slow(io.RawIOBase):
    def __init__(self, f, delay: float) -> None:
        self.f, self.delay = f, delay

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        time.sleep(self.delay)
        return self.f.read(min(n, 1 << 16) if n and n > 0 else 1 << 16)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()


def blob_layer(tmp: Path, name: str, tar: bytes, *, delay: float = 0.0, diff_id: Digest | None = None) -> BlobLayer:
    gz = gzip.compress(tar, mtime=0)
    path = tmp / f"{name}.tar.gz"
    path.write_bytes(gz)
    return BlobLayer(path, Digest("sha256", hashlib.sha256(gz).hexdigest()),
                     diff_id or Digest("sha256", hashlib.sha256(tar).hexdigest()), len(gz),
                     tmp / f"{name}.opens", delay)


LOWER = [
    ("etc", "d"), ("etc/passwd", "f"), ("etc/gone", "f"), ("etc/keep", "f"), ("etc/keep2", "h", "etc/keep"),
    ("opq", "d"), ("opq/old", "f"), ("opq/sub", "d"), ("opq/sub/deep", "f"),
    ("redo", "d"), ("redo/lowerchild", "f"),
    ("usr", "d"), ("usr/bin", "d"), ("usr/bin/tool", "f", b"tool v1"), ("usr/bin/alias", "h", "usr/bin/tool"),
    ("link", "l", "usr/bin"), ("dir2file", "d"), ("dir2file/x", "f"),
]
UPPER = [
    ("etc", "d"), ("etc/.wh.gone", "f", b""), ("etc/new", "f"), ("etc/new2", "h", "etc/new"),
    ("opq", "d"), ("opq/.wh..wh..opq", "f", b""), ("opq/fresh", "f"),
    ("redo", "d"), ("redo/upperchild", "f"), ("redo/.wh.nothing-there", "f", b""),
    (".wh.redo", "f", b""),  # after the layer's own redo/: hides the lower children only
    ("usr", "d"), ("usr/bin", "d"), ("usr/bin/tool", "f", b"tool v2"),
    ("dir2file", "f"), (".wh.link", "f", b""),
]
# parents left out of the tar: usr and usr/lib keep the lower layers' metadata when applied
IMPLICIT = [("usr/lib/x", "f"), ("usr/bin/tool2", "f"), ("newtop/a/b", "f")]


def tree(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, mtime, content or target, image xattrs); files sharing an
    inode are marked with the first name of their group (an overlay reports the lower layer's
    link count for a name whose partner was replaced above, so the count itself is not compared)."""
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            else:
                what = str(st.st_rdev) if not stat.S_ISDIR(st.st_mode) else ""
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                a: os.getxattr(p, a, follow_symlinks=False) for a in os.listxattr(p, follow_symlinks=False)
                if ".overlay." not in a}
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_mtime_ns, what, xattrs)
    for names in inodes.values():
        if len(names) > 1:
            for rel in names:
                kind, mode, uid, gid, mtime, what, xattrs = out[rel]
                out[rel] = (kind, mode, uid, gid, mtime, f"{what} link-group {min(names)}", xattrs)
    return out


def classic(tmp: Path, layers: list[BlobLayer]) -> Path:
    root = tmp / "classic"
    root.mkdir()
    for layer in layers:
        with open(layer.path, "rb") as blob:
            extract_layer(blob, root, expect_diff_id=layer.diff_id)
    return root


# -- unpack, reuse, whiteout form ----------------------------------------------------------------

@needs_root
def test_unpack_once_and_reuse_with_overlay_whiteouts(tmp_path):
    layer = blob_layer(tmp_path, "upper", make_tar(UPPER))
    store = LayerStore(tmp_path / "cache")
    with store.acquire(layer) as lease:
        fs = lease.path
        assert fs == tmp_path / "cache" / "layers" / "sha256" / layer.diff_id.hex / "fs"
        gone = os.lstat(fs / "etc" / "gone")
        assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
        assert not (fs / "etc" / ".wh.gone").exists()
        assert os.getxattr(fs / "opq", "trusted.overlay.opaque") == b"y"
        assert not (fs / "opq" / ".wh..wh..opq").exists()
        # the whiteout of the layer's own directory makes it opaque, keeps its children; a
        # whiteout inside an opaque directory hides nothing more and would show in listings
        assert os.getxattr(fs / "redo", "trusted.overlay.opaque") == b"y"
        assert sorted(os.listdir(fs / "redo")) == ["upperchild"]
        assert (fs.parent / "whiteouts").read_bytes().split(b"\0") == [b"link", b"etc/gone"]
        # directory times are the tar's, not those of the conversion
        assert os.lstat(fs / "etc").st_mtime_ns == 1_000_000 * 10**9
        meta = lease.meta
        assert meta.diff_id == str(layer.diff_id) and meta.blob_digest == str(layer.digest)
        assert meta.entries == len(UPPER) and meta.uncompressed_bytes == len(make_tar(UPPER))
        assert (meta.whiteouts, meta.opaque_dirs, meta.char_whiteouts) == (4, 2, True)
        assert meta.root_entry is False
        on_disk = json.loads((fs.parent / "meta.json").read_text())
        assert on_disk["fingerprint"] == meta.fingerprint and on_disk["diff_id"] == str(layer.diff_id)
    used_before = os.lstat(fs.parent / "used").st_mtime_ns
    time.sleep(0.01)
    again = LayerStore(tmp_path / "cache")  # another build, another process's view
    with again.acquire(layer) as lease2:
        assert lease2.path == fs
    assert layer.open_count() == 1 and again.unpacked == 0
    assert os.lstat(fs.parent / "used").st_mtime_ns > used_before
    assert not os.listdir(tmp_path / "cache" / "layers" / ".tmp")


def test_wrong_diff_id_is_refused_and_leaves_nothing(tmp_path):
    tar = make_tar(LOWER)
    layer = blob_layer(tmp_path, "bad", tar, diff_id=Digest("sha256", "0" * 64))
    store = LayerStore(tmp_path / "cache")
    with pytest.raises(Exception, match="diff_id"):
        store.acquire(layer)
    assert store.lookup(layer.diff_id) is None
    assert not os.listdir(tmp_path / "cache" / "layers" / "sha256")
    assert not os.listdir(tmp_path / "cache" / "layers" / ".tmp")


def test_layer_needing_a_lower_layer_is_a_store_error(tmp_path):
    layer = blob_layer(tmp_path, "dangling", make_tar([("a", "h", "not-in-this-layer")]))
    with pytest.raises(StoreError, match="cannot be stored"):
        LayerStore(tmp_path / "cache").acquire(layer)
    assert not os.listdir(tmp_path / "cache" / "layers" / ".tmp")


# -- the two ways a stage root uses stored layers ---------------------------------------------

@needs_root
def test_copy_from_store_equals_applying_the_tars(tmp_path):
    layers = [blob_layer(tmp_path, "lower", make_tar(LOWER)), blob_layer(tmp_path, "upper", make_tar(UPPER)),
              blob_layer(tmp_path, "implicit", make_tar(IMPLICIT))]
    expected = tree(classic(tmp_path, layers))
    # directories made for IMPLICIT's entries have the time they were made, and so does usr,
    # the parent of a made one, when the tars are applied: those times are not compared
    made = ("usr", "usr/lib", "newtop", "newtop/a")
    # what the layers say, independently of any extraction code
    assert "etc/gone" not in expected and "link" not in expected
    assert sorted(k for k in expected if k.startswith("opq/")) == ["opq/fresh"]
    assert sorted(k for k in expected if k.startswith("redo/")) == ["redo/upperchild"]
    assert expected["dir2file"][0] == stat.S_IFREG
    assert expected["etc/keep2"][5].endswith("link-group etc/keep")
    assert expected["etc/new2"][5].endswith("link-group etc/new")
    store = LayerStore(tmp_path / "cache")
    leases = store.acquire_all(layers)
    try:
        dest = tmp_path / "copy"
        dest.mkdir()
        assert leases[2].layer.implicit_dirs() == {"usr", "usr/lib", "usr/bin", "newtop", "newtop/a"}
        stats = copy_layers([lease.path for lease in leases], dest,
                            implicit=[lease.layer.implicit_dirs() for lease in leases])
        got = tree(dest)
        assert {k: v[:4] + v[5:] for k, v in got.items() if k in made} == \
            {k: v[:4] + v[5:] for k, v in expected.items() if k in made}
        assert {k: v for k, v in got.items() if k not in made} == {k: v for k, v in expected.items() if k not in made}
        # a directory the tar did not carry keeps the metadata of the layer below (UPPER's usr, 12th entry)
        assert got["usr"][4] == 1_000_011 * 10**9 and got["usr"][1] == 0o751
        assert stats.cloned + stats.copied > 0
        # the copies share no inode with the store: a step writing a file cannot reach it
        assert os.lstat(dest / "usr/bin/tool").st_ino != os.lstat(leases[1].path / "usr/bin/tool").st_ino
    finally:
        for lease in leases:
            lease.close()


@needs_root
def test_overlay_of_stored_layers_equals_applying_the_tars(tmp_path):
    layers = [blob_layer(tmp_path, "lower", make_tar(LOWER)), blob_layer(tmp_path, "upper", make_tar(UPPER))]
    expected = tree(classic(tmp_path, layers))
    store = LayerStore(tmp_path / "cache")
    leases = store.acquire_all(layers)
    try:
        merged, upper, work = tmp_path / "merged", tmp_path / "up", tmp_path / "work"
        for d in (merged, upper, work):
            d.mkdir()
        assert plan_stack([lease.layer for lease in leases], userxattr=False).mountable
        # mount in a child's private mount namespace (lower dirs named by its O_PATH fds), list it there
        script = (
            "import json, sys, ctypes, os\n"
            "sys.path.insert(0, %r)\n"
            "from pybuildless.sandbox import _linux\n"
            "from pybuildless.store.stack import lowerdir_option\n"
            "from tests.test_layer_store import tree\n"
            "_linux.unshare(_linux.CLONE_NEWNS)\n"
            "_linux.mount(None, '/', None, _linux.MS_REC | _linux.MS_PRIVATE)\n"
            "fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in %r]  # in the new namespace\n"
            "_linux.mount('overlay', %r, 'overlay', 0,\n"
            "             'lowerdir=' + lowerdir_option(fds) + ',upperdir=%s,workdir=%s,index=off')\n"
            "from pathlib import Path\n"
            "t = tree(Path(%r))\n"
            "print(json.dumps({k: [v[0], v[1], v[2], v[3], v[4], v[5], sorted(v[6])] for k, v in t.items()}))\n"
        ) % (str(REPO), [str(lease.path) for lease in leases], str(merged), upper, work, str(merged))
        out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        want = {k: [v[0], v[1], v[2], v[3], v[4], v[5], sorted(v[6])] for k, v in expected.items()}
        assert seen == want
    finally:
        for lease in leases:
            lease.close()


@needs_root
def test_stacks_that_an_overlay_would_show_differently_are_refused(tmp_path):
    store = LayerStore(tmp_path / "cache")
    lower = blob_layer(tmp_path, "lower", make_tar(LOWER))
    implicit = blob_layer(tmp_path, "implicit", make_tar(IMPLICIT))
    stray = blob_layer(tmp_path, "stray",
                       make_tar([("newdir", "d"), ("newdir/.wh.x", "f", b""), (".wh.etc", "f", b"")]))
    alone = blob_layer(tmp_path, "alone", make_tar([(".wh.anything", "f", b""), ("f", "f")]))
    opaque = blob_layer(tmp_path, "opaque", make_tar([("d", "d"), ("d/.wh..wh..opq", "f", b""), ("d/x", "f")]))
    leases = {n: store.acquire(layer) for n, layer in
              (("lower", lower), ("implicit", implicit), ("stray", stray), ("alone", alone), ("opaque", opaque))}
    try:
        def plan(*names: str):
            return plan_stack([leases[n].layer for n in names], userxattr=False)
        # usr is not in IMPLICIT's tar, and LOWER's usr has other metadata
        refused = plan("lower", "implicit")
        assert not refused.mountable and "/usr" in refused.reason
        # newdir/.wh.x: no lower layer has newdir, an overlay would list the whiteout
        refused = plan("lower", "stray")
        assert not refused.mountable and "/newdir/x" in refused.reason
        assert plan("alone").mountable  # whiteouts in the root: merged with the upper dir
        assert plan("implicit").mountable  # nothing below to differ from
        # opaque directories marked for a mount as real root, not for one with userxattr
        assert plan("lower", "opaque").mountable
        refused = plan_stack([leases["lower"].layer, leases["opaque"].layer], userxattr=True)
        assert not refused.mountable and "trusted.overlay.opaque" in refused.reason
    finally:
        for lease in leases.values():
            lease.close()


USERNS_CHILD = """
import json, os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.test_layer_store import BlobLayer
from pybuildless.image.descriptor import Digest
from pybuildless.sandbox import _linux
from pybuildless.store.layers import LayerStore
from pybuildless.store.stack import lowerdir_option, plan_stack
layers = [BlobLayer(Path(d["path"]), Digest.parse(d["digest"]), Digest.parse(d["diff_id"]), d["size"],
                    Path(d["opens"])) for d in json.loads(sys.argv[1])]
store = LayerStore(sys.argv[2])
leases = store.acquire_all(layers)
metas = [(lease.meta.opaque_xattr, lease.meta.char_whiteouts) for lease in leases]
plan = plan_stack([lease.layer for lease in leases], userxattr=True)
_linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
fds = [os.open(lease.path, os.O_PATH | os.O_DIRECTORY) for lease in leases]
merged, upper, work = sys.argv[3:6]
_linux.mount("overlay", merged, "overlay", 0,
             f"lowerdir={{lowerdir_option(fds)}},upperdir={{upper}},workdir={{work}},userxattr")
names = sorted(str(p.relative_to(merged)) for p in Path(merged).rglob("*"))
print(json.dumps({{"metas": metas, "mountable": plan.mountable, "names": names}}))
"""


@needs_root
def test_store_made_in_a_user_namespace_mounts_with_userxattr(tmp_path):
    layers = [blob_layer(tmp_path, "lower", make_tar(LOWER)), blob_layer(tmp_path, "upper", make_tar(UPPER))]
    expected = sorted(tree(classic(tmp_path, layers)))
    dirs = [tmp_path / n for n in ("merged", "up", "work")]
    for d in dirs:
        d.mkdir()
    arg = json.dumps([{"path": str(x.path), "digest": str(x.digest), "diff_id": str(x.diff_id), "size": x.size,
                       "opens": str(x.opens)} for x in layers])
    out = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c",
                          USERNS_CHILD.format(repo=str(REPO)), arg, str(tmp_path / "cache"), *map(str, dirs)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    # whiteouts as char 0/0 (no CAP_MKNOD needed for those) and opaque directories for userxattr mounts
    assert seen["metas"] == [["user.overlay.opaque", True]] * 2 and seen["mountable"]
    assert seen["names"] == expected


# -- concurrency and crashes --------------------------------------------------------------------

CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.test_layer_store import BlobLayer
from pybuildless.image.descriptor import Digest
from pybuildless.store.layers import LayerStore
d = json.loads(sys.argv[1])
layer = BlobLayer(Path(d["path"]), Digest.parse(d["digest"]), Digest.parse(d["diff_id"]), d["size"],
                  Path(d["opens"]), d["delay"])
store = LayerStore(d["root"])
with store.acquire(layer) as lease:
    entered = time.time()
    print(json.dumps({{"path": str(lease.path), "fingerprint": lease.meta.fingerprint,
                       "unpacked": store.unpacked, "entered": entered}}), flush=True)
    time.sleep(d.get("hold", 0))  # the build using its stage root
print(json.dumps({{"left": time.time()}}))
"""


def spawn(layer: BlobLayer, root: Path, hold: float = 0) -> subprocess.Popen:
    arg = json.dumps({"path": str(layer.path), "digest": str(layer.digest), "diff_id": str(layer.diff_id),
                      "size": layer.size, "opens": str(layer.opens), "delay": layer.delay, "root": str(root),
                      "hold": hold})
    return subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO)), arg], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def big_tar(files: int = 200) -> bytes:
    return make_tar([("data", "d")] + [(f"data/f{i:03d}", "f", os.urandom(32 << 10)) for i in range(files)])


def test_two_processes_unpack_a_layer_once(tmp_path):
    layer = blob_layer(tmp_path, "big", big_tar(), delay=0.005)
    root = tmp_path / "cache"
    procs = [spawn(layer, root, hold=3), spawn(layer, root, hold=3)]
    # while an unpack runs, cleaning temp dirs must leave its temp dir alone
    tmp = root / "layers" / ".tmp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp.exists() and os.listdir(tmp)):
        time.sleep(0.01)
    assert os.listdir(tmp), "no unpack started"
    assert LayerStore(root).clean_temps() == 0 and os.listdir(tmp)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        first, last = out.splitlines()
        results.append({**json.loads(first), **json.loads(last)})
    # both builds had the layer at the same time: the one that unpacked it did not hold up the other
    assert max(r["entered"] for r in results) < min(r["left"] for r in results)
    assert layer.open_count() == 1
    assert sorted(r["unpacked"] for r in results) == [0, 1]
    assert results[0]["path"] == results[1]["path"] and results[0]["fingerprint"] == results[1]["fingerprint"]
    assert len(os.listdir(Path(results[0]["path"]) / "data")) == 200


def test_kill_mid_unpack_serves_nothing_and_is_cleaned(tmp_path):
    layer = blob_layer(tmp_path, "big", big_tar(), delay=0.02)
    root = tmp_path / "cache"
    child = spawn(layer, root)
    tmp = root / "layers" / ".tmp"
    deadline = time.monotonic() + 30
    partial = None
    while time.monotonic() < deadline:
        names = os.listdir(tmp) if tmp.exists() else []
        if names and (tmp / names[0] / "fs" / "data").exists() and len(os.listdir(tmp / names[0] / "fs" / "data")) > 5:
            partial = tmp / names[0]
            break
        time.sleep(0.01)
    assert partial is not None, "the unpack never got going"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    store = LayerStore(root)
    assert partial.exists()  # the crash left its temp dir
    assert store.lookup(layer.diff_id) is None and not os.listdir(root / "layers" / "sha256")
    assert [e.diff_id for e in store.entries()] == []
    assert store.clean_temps() == 1 and not partial.exists()
    fast = BlobLayer(layer.path, layer.digest, layer.diff_id, layer.size, layer.opens)
    with store.acquire(fast) as lease:
        assert len(os.listdir(lease.path / "data")) == 200
    assert layer.open_count() == 2


def test_leftover_of_a_crash_is_removed_by_the_next_unpack(tmp_path):
    layer = blob_layer(tmp_path, "l", make_tar(LOWER))
    store = LayerStore(tmp_path / "cache")
    store._prepare()
    leftover = store.tmp_dir / f"{layer.diff_id.hex}.99999.deadbeef"
    (leftover / "fs").mkdir(parents=True)
    with store.acquire(layer):
        pass
    assert not leftover.exists()


# -- damage on disk -----------------------------------------------------------------------------

def test_deleted_file_is_detected_and_fetched_again(tmp_path):
    layer = blob_layer(tmp_path, "l", make_tar(LOWER))
    store = LayerStore(tmp_path / "cache")
    with store.acquire(layer) as lease:
        fs = lease.path
    os.unlink(fs / "opq" / "sub" / "deep")
    with store.acquire(layer) as lease:
        assert (lease.path / "opq" / "sub" / "deep").read_bytes() == b"opq/sub/deep"
    assert layer.open_count() == 2


def test_truncated_file_is_found_by_the_full_check(tmp_path):
    layer = blob_layer(tmp_path, "l", make_tar(LOWER))
    store = LayerStore(tmp_path / "cache")
    with store.acquire(layer) as lease:
        fs = lease.path
    assert store.verify(layer.diff_id)
    with open(fs / "usr" / "bin" / "tool", "r+b") as f:
        f.truncate(2)
    assert not store.verify(layer.diff_id)
    with LayerStore(tmp_path / "cache", verify="full").acquire(layer) as lease:
        assert (lease.path / "usr" / "bin" / "tool").read_bytes() == b"tool v1"
    assert layer.open_count() == 2 and store.verify(layer.diff_id)


def test_unreadable_metadata_is_not_trusted(tmp_path):
    layer = blob_layer(tmp_path, "l", make_tar(LOWER))
    store = LayerStore(tmp_path / "cache")
    with store.acquire(layer) as lease:
        meta_file = lease.path.parent / "meta.json"
    meta_file.write_text("{not json")
    with store.acquire(layer):
        pass
    assert layer.open_count() == 2 and json.loads(meta_file.read_text())["diff_id"] == str(layer.diff_id)


# -- garbage collection -------------------------------------------------------------------------

def test_gc_keeps_the_most_recently_used(tmp_path):
    store = LayerStore(tmp_path / "cache")
    layers = {n: blob_layer(tmp_path, n, make_tar([(n, "f", os.urandom(size << 10))]))
              for n, size in (("a", 64), ("b", 128), ("c", 256))}
    for n in ("a", "b", "c", "a"):
        with store.acquire(layers[n]):
            time.sleep(0.01)  # distinct use times
    size = {n: store.lookup(layer.diff_id).disk_bytes for n, layer in layers.items()}
    result = collect(store, size["a"] + size["c"])
    assert result.removed == (layers["b"].diff_id,) and result.freed_bytes == size["b"]
    assert {e.diff_id for e in store.entries()} == {layers["a"].diff_id, layers["c"].diff_id}
    # an entry in use survives even when it is over the limit
    with store.acquire(layers["c"]):
        result = prune(store)
        assert result.removed == (layers["a"].diff_id,) and result.in_use == (layers["c"].diff_id,)
    assert prune(store).removed == (layers["c"].diff_id,)
    assert list(store.entries()) == []


def test_parse_size():
    assert parse_size("0") == 0 and parse_size("10GB") == 10 << 30 and parse_size("1.5k") == 1536
    with pytest.raises(Exception, match="--max-size"):
        parse_size("ten")


def test_prune_command(tmp_path):
    store = LayerStore(tmp_path / "cache")
    with store.acquire(blob_layer(tmp_path, "l", make_tar(LOWER))):
        pass
    run = subprocess.run([sys.executable, "-m", "pybuildless", "prune", "--cache-dir", str(tmp_path / "cache")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("removed 1 layer(s)") and list(store.entries()) == []
    bad = subprocess.run([sys.executable, "-m", "pybuildless", "prune", "--cache-dir", str(tmp_path / "cache"),
                          "--max-size", "lots"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--max-size" in bad.stderr


# -- builds holding entries ---------------------------------------------------------------------

def in_thread(fn, timeout: float = 30):
    """fn's result, failing (not hanging) when it waits on a lock."""
    import threading

    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked on the store's locks"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_builds_using_an_entry_never_wait_for_each_other(tmp_path):
    layer = blob_layer(tmp_path, "l", make_tar(LOWER))
    root = tmp_path / "cache"
    # another process holds the entry for as long as its build runs
    holder = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO)).replace(
        "    print(", "    import time; print(").replace("}}))\n", "}}), flush=True); time.sleep(60)\n"),
        json.dumps({"path": str(layer.path), "digest": str(layer.digest), "diff_id": str(layer.diff_id),
                    "size": layer.size, "opens": str(layer.opens), "delay": 0, "root": str(root)})],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(holder.stdout.readline())["unpacked"] == 1
        store = LayerStore(root)
        lease = in_thread(lambda: store.acquire(layer), timeout=10)
        lease2 = in_thread(lambda: store.acquire(layer), timeout=10)  # this process, a second stage
        assert in_thread(lambda: store.verify(layer.diff_id), timeout=10)
        assert store.remove_if_unused(layer.diff_id) is False
        lease.close()
        lease2.close()
        assert layer.open_count() == 1
    finally:
        holder.kill()
        holder.wait()
    assert LayerStore(root).remove_if_unused(layer.diff_id) is True


def test_entry_damaged_while_this_process_uses_it_is_an_error_not_a_hang(tmp_path):
    layer = blob_layer(tmp_path, "l", make_tar(LOWER))
    store = LayerStore(tmp_path / "cache")
    with store.acquire(layer) as lease:
        os.unlink(lease.path / "etc" / "passwd")
        with pytest.raises(StoreError, match="changed on disk while this build uses it"):
            in_thread(lambda: store.acquire(layer), timeout=10)
    with store.acquire(layer) as lease:  # once released, repaired
        assert (lease.path / "etc" / "passwd").exists()


@dataclass(frozen=True)
class MeetingLayer(BlobLayer):
    """A blob whose download starts only when every layer of the image has started its own."""

    meeting: threading.Barrier | None = None

    def open_compressed(self):
        self.meeting.wait()  # BrokenBarrierError after its timeout when the others never start
        return super().open_compressed()


def test_missing_layers_are_fetched_and_unpacked_side_by_side(tmp_path):
    meeting = threading.Barrier(3, timeout=20)
    layers = []
    for n in range(3):
        plain = blob_layer(tmp_path, f"l{n}", make_tar([(f"d{n}", "d"), (f"d{n}/f", "f")]))
        layers.append(MeetingLayer(plain.path, plain.digest, plain.diff_id, plain.size, plain.opens, meeting=meeting))
    store = LayerStore(tmp_path / "cache")
    leases = store.acquire_all(layers)
    try:
        assert [lease.layer.diff_id for lease in leases] == [layer.diff_id for layer in layers]  # in order
        assert [sorted(os.listdir(lease.path)) for lease in leases] == [["d0"], ["d1"], ["d2"]]
        assert store.unpacked == 3
    finally:
        for lease in leases:
            lease.close()
    # one after another, the first download would wait for the others forever: that is the check
    with pytest.raises(threading.BrokenBarrierError):
        LayerStore(tmp_path / "other").acquire_all(
            [MeetingLayer(l.path, l.digest, l.diff_id, l.size, l.opens, meeting=threading.Barrier(3, timeout=0.5))
             for l in layers], jobs=1)


def test_a_failed_layer_releases_the_others(tmp_path):
    good = blob_layer(tmp_path, "good", make_tar([("a", "f")]))
    bad = blob_layer(tmp_path, "bad", make_tar([("b", "f")]), diff_id=Digest("sha256", "0" * 64))
    store = LayerStore(tmp_path / "cache")
    with pytest.raises(Exception, match="diff_id"):
        store.acquire_all([good, bad])
    # the good layer was stored and its lease given back: nothing holds it, so prune removes it
    assert prune(store).removed == (good.diff_id,)
