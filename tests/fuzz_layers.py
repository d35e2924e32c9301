"""Reading the layers of a built image and comparing two images layer by layer (for the random
differential runs of ``tests/fuzz_dockerfiles.py``).

A layer is read from its tar, as an extractor sees it: each entry's type, permission bits, owner,
size, content hash or link target or device, and ``SCHILY.xattr`` records; hard links resolved to the
entry they name (which of two names a builder writes first is not the image's business, the link
groups are compared instead); whiteouts (``.wh.NAME``) and opaque markers (``.wh..wh..opq``) apart.
The layers are then applied in order, as the OCI image spec says, giving the tree after each layer.

Compared, as ``tests/differential/compare.py`` compares the final image: the tree after every layer
(type, mode, owner, content, link target, device, xattrs, hard-link groups, with that module's
``LEFTOVERS``: the empty /dev, /proc, /sys runc leaves in BuildKit's first RUN layer), the entries of
each layer (what the layer writes, whiteouts and opaque markers included), the config fields
(``compare.config_differences``) and the layer count. Modification times are not compared, as in
``compare.py``: a step's new files get the build's clock in each builder.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.differential.compare import BUILDKIT, LEFTOVERS, config_differences, describe, tree_differences

WH, OPQ = ".wh.", ".wh..wh..opq"
_KINDS = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l",
          tarfile.FIFOTYPE: "o", tarfile.CHRTYPE: "o", tarfile.BLKTYPE: "o", tarfile.CONTTYPE: "f"}

Entry = tuple  # (kind, mode, uid, gid, what, xattrs): the shape of compare.tree_of


@dataclass(frozen=True)
class Layer:
    entries: dict[str, Entry]
    links: frozenset  # frozensets of paths written as one inode (hard links) in this layer
    whiteouts: frozenset
    opaque: frozenset


@dataclass(frozen=True)
class Image:
    layers: tuple[Layer, ...]
    config: dict


def _clean(name: str) -> str:
    name = posixpath.normpath("/" + name)
    return name


def read_layer(fileobj) -> Layer:
    entries: dict[str, Entry] = {}
    link_of: dict[str, str] = {}
    whiteouts, opaque = set(), set()
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for m in tar:
            path = _clean(m.name)
            base = posixpath.basename(path)
            if base == OPQ:
                opaque.add(posixpath.dirname(path))
                continue
            if base.startswith(WH):
                whiteouts.add(posixpath.join(posixpath.dirname(path), base[len(WH):]))
                continue
            xattrs = tuple(sorted((k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape").hex())
                                  for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")))
            if m.type == tarfile.LNKTYPE:
                target = _clean(m.linkname)
                root = link_of.get(target, target)
                link_of[path] = root
                if root in entries:
                    entries[path] = entries[root]
                else:
                    entries[path] = ("?", 0, 0, 0, f"hard link to {root} not in this layer", ())
                continue
            kind = _KINDS.get(m.type, "?")
            if kind == "f":
                data = tar.extractfile(m).read()
                what = hashlib.sha256(data).hexdigest()
            elif kind == "l":
                what = m.linkname
            elif kind == "o":
                what = f"{m.type.decode()}:{m.devmajor}:{m.devminor}"
            else:
                what = ""
            entries[path] = (kind, m.mode & 0o7777, m.uid, m.gid, what, xattrs)
    groups: dict[str, set] = {}
    for path, root in link_of.items():
        groups.setdefault(root, {root}).add(path)
    return Layer(entries, frozenset(frozenset(g) for g in groups.values()), frozenset(whiteouts), frozenset(opaque))


def read_oci_layout(layout: Path) -> Image:
    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: layout / "blobs" / d.split(":")[0] / d.split(":")[1]  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    layers = []
    for desc in manifest["layers"]:
        with open(blob(desc["digest"]), "rb") as f:
            layers.append(read_layer(f))
    return Image(tuple(layers), config)


def read_docker_archive(path: Path) -> Image:
    """A ``docker save`` tarball (one image)."""
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        config = json.load(outer.extractfile(manifest["Config"]))
        layers = []
        for name in manifest["Layers"]:
            layers.append(read_layer(outer.extractfile(name)))
    return Image(tuple(layers), config)


# ---------------------------------------------------------------------------------------------------
# Applying layers
# ---------------------------------------------------------------------------------------------------

@dataclass
class Tree:
    entries: dict[str, Entry]
    inode: dict[str, int]
    next_inode: int = 0

    def drop(self, path: str, keep_self: bool = False) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.entries if p.startswith(prefix) or (p == path and not keep_self)]:
            del self.entries[p]
            del self.inode[p]

    def apply(self, layer: Layer) -> None:
        for path in layer.whiteouts:
            self.drop(path)
        for path in layer.opaque:
            self.drop(path, keep_self=True)
        inodes: dict[frozenset, int] = {}
        for path in sorted(layer.entries):
            entry = layer.entries[path]
            old = self.entries.get(path)
            if old is not None and (entry[0] != "d" or old[0] != "d"):
                self.drop(path)
            group = next((g for g in layer.links if path in g), None)
            if group is not None and group in inodes:
                ino = inodes[group]
            else:
                self.next_inode += 1
                ino = self.next_inode
                if group is not None:
                    inodes[group] = ino
            self.entries[path] = entry
            self.inode[path] = ino

    def hardlinks(self) -> set[frozenset[str]]:
        by: dict[int, set] = {}
        for path, entry in self.entries.items():
            if entry[0] == "f":
                by.setdefault(self.inode[path], set()).add(path)
        return {frozenset(g) for g in by.values() if len(g) > 1}


def trees(image: Image) -> list[Tree]:
    """The tree after each layer."""
    tree, out = Tree({}, {}), []
    for layer in image.layers:
        tree.apply(layer)
        out.append(Tree(dict(tree.entries), dict(tree.inode), tree.next_inode))
    return out


# ---------------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------------

# Directories a reference builder writes into a RUN layer unchanged, whatever the step did.
STUB_PARENTS = {
    BUILDKIT: (
        "/etc",
        "BuildKit 0.8 runs each RUN with /etc/resolv.conf and /etc/hosts bind-mounted; runc creates the "
        "mount points in the rootfs when the base lacks them and MountStubsCleaner removes them after the "
        "step, so overlayfs has copied /etc up and the layer holds it with the lower layer's owner and mode "
        "(only its mtime moves). The busybox test base has neither file",
        "moby v20.10.24 (5d6db842238e3c4f5f9fb9ad70ea46b35227d084) "
        "vendor/github.com/moby/buildkit/executor/stubs.go MountStubsCleaner"),
}


def _leftover_entry(path: str, entry: Entry, reference: str, lower: dict[str, Entry]) -> bool:
    if reference == BUILDKIT and entry[0] == "d" and lower.get(path) == entry:
        # A directory the reference's layer writes as the lower layers have it: overlayfs copied it up
        # (a stub made and removed below it, see STUB_PARENTS; or a chown/chmod/touch that set what it
        # already was: the kernel copies up on any metadata change, fs/overlayfs/inode.c
        # ovl_setattr -> ovl_copy_up). Applying it changes nothing (at most the mtime, which is not
        # compared); pybuildless leaves such directories out (fs/overlay.py overlay_changes)
        return True
    return any(left.reference == reference and left.path == path and left.shape == "empty-dir" and entry[0] == "d"
               for left in LEFTOVERS)


def entry_differences(ours: Layer, theirs: Layer, reference: str, a: str, b: str,
                      lower: dict[str, Entry] | None = None) -> list[str]:
    """What the two layers write differently; ``lower``: the tree below ``theirs``."""
    out = []
    for path in sorted(set(ours.entries) | set(theirs.entries)):
        x, y = ours.entries.get(path), theirs.entries.get(path)
        if x == y or (x is None and _leftover_entry(path, y, reference, lower or {})):
            continue
        if x is None:
            out.append(f"{path}: only in {b}'s layer ({describe(y)})")
        elif y is None:
            out.append(f"{path}: only in {a}'s layer ({describe(x)})")
        else:
            out.append(f"{path}: {a} {describe(x)} | {b} {describe(y)}")
    for what in ("whiteouts", "opaque"):
        x, y = getattr(ours, what), getattr(theirs, what)
        if what == "opaque" and lower is not None:
            # an opaque marker on a directory the lower layers do not have hides nothing (OCI image spec,
            # layer.md "Opaque Whiteout": it hides the directory's children in lower layers). The kernel
            # marks a directory made in the step opaque when it is renamed into a directory the lower
            # layers have (fs/overlayfs/dir.c ovl_rename: ovl_set_opaque_xerr when the new parent is a
            # merge dir), and an upper-dir differ writes the marker; a differ that checks the lower
            # layers does not
            x, y = ({o for o in v if o in lower} for v in (x, y))
        if x != y:
            out.append(f"{what}: only {a}: {sorted(x - y)}; only {b}: {sorted(y - x)}")
    if _canon_links(ours) != _canon_links(theirs):
        out.append(f"hard links in the layer: {a} {sorted(map(sorted, ours.links))} | "
                   f"{b} {sorted(map(sorted, theirs.links))}")
    return out


def _canon_links(layer: Layer) -> set:
    return {g for g in layer.links if len(g) > 1}


def image_differences(ours: Image, theirs: Image, reference: str = BUILDKIT, a: str = "pybuildless",
                      b: str = BUILDKIT) -> list[str]:
    """Readable lines, one group per kind of difference; empty when the images match."""
    out = []
    cfg = config_differences(ours.config, theirs.config, reference)
    out += [text.replace("pybuildless", a).replace(f"    {reference}:", f"    {b}:") for text in cfg.values()]
    if len(ours.layers) != len(theirs.layers):
        out.append(f"layer count: {a} {len(ours.layers)}, {b} {len(theirs.layers)}")
        final_a, final_b = trees(ours)[-1:], trees(theirs)[-1:]
        if final_a and final_b:
            out += _tree_lines("final image", final_a[0], final_b[0], reference, a, b)
        return out
    trees_b = trees(theirs)
    for i, (ta, tb) in enumerate(zip(trees(ours), trees_b)):
        lines = _tree_lines(f"tree after layer {i}", ta, tb, reference, a, b)
        if lines:
            out += lines
            break  # later layers repeat the same difference
    for i, (la, lb) in enumerate(zip(ours.layers, theirs.layers)):
        lines = entry_differences(la, lb, reference, a, b, trees_b[i - 1].entries if i else {})
        if lines:
            out.append(f"entries of layer {i}:")
            out += ["    " + line for line in lines[:40]]
            if len(lines) > 40:
                out.append(f"    ... {len(lines) - 40} more")
    return out


def _tree_lines(title: str, ta: Tree, tb: Tree, reference: str, a: str, b: str) -> list[str]:
    diffs = tree_differences(ta.entries, tb.entries, reference)
    lines = [text.replace("pybuildless", a) for text in diffs.values()]
    ha, hb = ta.hardlinks(), tb.hardlinks()
    if ha != hb:
        lines.append(f"hard-link groups: only {a}: {sorted(map(sorted, ha - hb))}; only {b}: "
                     f"{sorted(map(sorted, hb - ha))}")
    if not lines:
        return []
    return [f"{title}:"] + ["    " + line for line in lines[:40]] + (
        [f"    ... {len(lines) - 40} more"] if len(lines) > 40 else [])
