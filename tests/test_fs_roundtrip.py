"""Property: the layer written for a snapshot diff A -> B, applied onto a copy of A, gives B."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuildless.fs.extract import extract_layer
from pybuildless.fs.layer import write_layer
from pybuildless.fs.snapshot import Snapshotter
from tests.fs_hostile import fingerprint

NAMES = ["a", "b", "c"]
PATHS = [x for x in NAMES] + [f"{x}/{y}" for x in NAMES for y in NAMES] + \
        [f"{x}/{y}/{z}" for x in NAMES for y in NAMES for z in NAMES]
UIDS = [0, 1000, 65534] if os.geteuid() == 0 else [os.geteuid()]
MTIMES = st.integers(1_000_000_000, 1_700_000_000)

dir_node = st.tuples(st.just("dir"), st.sampled_from([0o755, 0o700, 0o1777, 0o2775]), st.sampled_from(UIDS), MTIMES,
                     st.booleans())  # last: recreate in place during the mutation (opaque case)
file_node = st.tuples(st.just("file"), st.binary(max_size=64), st.sampled_from([0o644, 0o600, 0o4755, 0o2755, 0o755]),
                      st.sampled_from(UIDS), MTIMES, st.sampled_from([None, b"v1", b"\x00\xffbin"]))
link_node = st.tuples(st.just("symlink"), st.sampled_from(["a", "../b", "/c/a", "dangling", "/"]),
                      st.sampled_from(UIDS), MTIMES)
hard_node = st.tuples(st.just("hardlink"), st.sampled_from(["a", "b", "c", "a/a", "b/b", "c/c"]))
node = st.one_of(dir_node, dir_node, file_node, file_node, link_node, hard_node)
trees = st.dictionaries(st.sampled_from(PATHS), node, min_size=2, max_size=25)


def normalise(raw: dict) -> dict:
    """Missing parents become directories; entries under non-directories are dropped;
    hardlinks must point at files."""
    tree: dict = {}
    for path in sorted(raw, key=lambda p: p.count("/")):
        parts = path.split("/")
        ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if any(anc in tree and tree[anc][0] != "dir" for anc in ancestors):
            continue
        for anc in ancestors:
            tree.setdefault(anc, ("dir", 0o755, UIDS[0], 1_400_000_000, False))
        tree[path] = raw[path]
    for path, n in list(tree.items()):
        if n[0] == "hardlink" and (n[1] not in tree or tree[n[1]][0] != "file" or n[1] == path):
            tree[path] = ("file", b"was a link", 0o644, UIDS[0], 1_500_000_000, None)
    return tree


def _set_xattr(p: Path, value):
    for name in os.listxattr(p):
        if name.startswith("user."):
            os.removexattr(p, name)
    if value is not None:
        os.setxattr(p, "user.k", value)


def _matches(p: Path, n, tree) -> bool:
    try:
        stt = os.lstat(p)
    except FileNotFoundError:
        return False
    kind = n[0]
    if kind == "dir":
        return stat.S_ISDIR(stt.st_mode)
    if kind == "symlink":
        return stat.S_ISLNK(stt.st_mode) and os.readlink(p) == n[1]
    if kind == "file":
        return stat.S_ISREG(stt.st_mode) and stt.st_nlink == 1
    return False  # hardlinks are always re-made


def materialise(root: Path, tree: dict, *, mutate: bool = False) -> None:
    """Create ``tree`` at ``root``; with ``mutate``, turn the existing tree into it in place."""
    root.mkdir(exist_ok=True)
    if mutate:
        existing = sorted((os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root)
                           for n in ds + fs), key=lambda p: -p.count("/"))
        for rel in existing:
            p = root / rel
            if not os.path.lexists(p):
                continue
            n = tree.get(rel)
            if n is None or not _matches(p, n, tree):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            elif n[0] == "dir" and n[4]:
                shutil.move(p, root.parent / f"recreated-{rel.replace('/', '_')}")  # keep the inode busy
                p.mkdir()
    order = sorted(tree, key=lambda p: p.count("/"))
    for rel in order:
        n, p = tree[rel], root / rel
        if n[0] == "dir" and not p.is_dir():
            p.mkdir()
        elif n[0] == "file":
            if not p.exists() or p.read_bytes() != n[1]:
                p.write_bytes(n[1])  # in place when it exists: same inode, new ctime
        elif n[0] == "symlink" and not os.path.lexists(p):
            os.symlink(n[1], p)
    for rel in order:
        n, p = tree[rel], root / rel
        if n[0] == "hardlink" and not os.path.lexists(p):
            os.link(root / n[1], p)
    for rel in sorted(tree, key=lambda p: -p.count("/")):  # children before parents: dir times last
        n, p = tree[rel], root / rel
        if n[0] == "file":
            os.chown(p, n[3], n[3])
            _set_xattr(p, n[5])
            os.chmod(p, n[2])
            os.utime(p, (n[4], n[4]))
        elif n[0] == "symlink":
            os.chown(p, n[2], n[2], follow_symlinks=False)
            os.utime(p, (n[3], n[3]), follow_symlinks=False)
        elif n[0] == "dir":
            os.chown(p, n[2], n[2])
            os.chmod(p, n[1])
            os.utime(p, (n[3], n[3]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=trees, b=trees, compression=st.sampled_from(["gzip", "zstd", "none"]), watch=st.booleans())
def test_diff_layer_applied_to_a_gives_b(tmp_path_factory, a, b, compression, watch):
    a, b = normalise(a), normalise(b)
    work = tmp_path_factory.mktemp("rt")
    x, y, out = work / "x", work / "y", work / "out"
    materialise(x, a)
    materialise(y, a)
    assert fingerprint(x) == fingerprint(y)
    snap = Snapshotter(x, watch=watch)
    snap.baseline()
    materialise(x, b, mutate=True)
    changes = snap.take()
    layer = write_layer(x, changes, out, compression=compression)
    extract_layer(open(layer.path, "rb"), y, expect_diff_id=layer.diff_id)
    assert fingerprint(y) == fingerprint(x)
    assert snap.take().empty, "the state after a step is the next baseline"
    snap.close()
