"""Filesystem-engine benchmark: snapshots of a 100k-file tree, layer writing, extraction.

    python benchmarks/snapshot.py [--files 100000] [--layer-mb 100]

Targets: the snapshot after a one-file change under 0.3 s; extraction >= 100 MB/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pybuildless.fs.extract import extract_layer
from pybuildless.fs.layer import write_layer, write_root_layer
from pybuildless.fs.snapshot import Snapshotter


def build_tree(root: Path, files: int, per_dir: int = 250) -> None:
    for i in range(files):
        d = root / f"d{i // (per_dir * 20)}" / f"s{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        with open(d / f"f{i}", "wb") as f:
            f.write(b"x" * (i % 64))


def build_payload(root: Path, megabytes: int) -> int:
    """~megabytes of files, half random, half text-like (compressible)."""
    rnd = os.urandom(1 << 24)
    text = (b"lorem ipsum dolor sit amet, consectetur adipiscing elit " * 20000)[: 1 << 20]
    total = 0
    for i in range(megabytes * 8):  # 128 KiB files
        d = root / f"pkg{i // 64}"
        d.mkdir(parents=True, exist_ok=True)
        src = rnd if i % 2 else text
        off = (i * 7919 * 64) % (len(src) - (1 << 17))
        (d / f"file{i}.bin").write_bytes(src[off: off + (1 << 17)])
        total += 1 << 17
    return total


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--layer-mb", type=int, default=100)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pybuildless-bench-", dir=args.dir))
    try:
        tree = work / "tree"
        _, t_build = timed(build_tree, tree, args.files)
        print(f"tree: {args.files} files built in {t_build:.1f} s")
        snap = Snapshotter(tree)
        _, t_base = timed(snap.baseline)
        print(f"baseline snapshot:            {t_base:.3f} s")
        _, t_none = timed(snap.take)
        print(f"snapshot, nothing changed:    {t_none * 1000:.2f} ms")
        victim = tree / "d0" / "s0" / "f1"
        victim.write_bytes(b"changed")
        changes, t_one = timed(snap.take)
        print(f"snapshot, one file changed:   {t_one * 1000:.2f} ms  ({len(changes.paths)} changed path)")
        walker = Snapshotter(tree, watch=False)
        walker.baseline()
        victim.write_bytes(b"changed again")
        snap.take()
        walk_changes, t_walk = timed(walker.take)
        print(f"same, full walk (no inotify): {t_walk:.3f} s  ({len(walk_changes.paths)} changed path)")
        hint, t_hint = timed(snap.take_paths, ["d0/s0/f1"])
        print(f"hint snapshot (COPY-style):   {t_hint * 1000:.2f} ms")
        small, t_small = timed(write_layer, tree, changes, work / "layers")
        print(f"layer for that change:        {t_small:.3f} s ({small.size} bytes)")

        tree_layer, t_tree = timed(write_root_layer, tree, work / "layers")
        print(f"layer of the {args.files}-file tree: {t_tree:.2f} s")
        dest = work / "extract-tree"
        dest.mkdir()
        os.sync()
        with open(tree_layer.path, "rb") as f:
            stats, t_ext = timed(extract_layer, f, dest)
        print(f"extraction of that layer:     {t_ext:.2f} s -> {stats.entries / t_ext:.0f} entries/s")
        shutil.rmtree(dest)

        payload = work / "payload"
        size = build_payload(payload, args.layer_mb)
        mb = size / 1e6
        layer, t_write = timed(write_root_layer, payload, work / "layers")
        print(f"layer write gzip:             {t_write:.2f} s for {mb:.0f} MB -> {mb / t_write:.0f} MB/s "
              f"(blob {layer.size / 1e6:.0f} MB)")
        zlayer, t_zwrite = timed(write_root_layer, payload, work / "layers", compression="zstd")
        print(f"layer write zstd:             {t_zwrite:.2f} s -> {mb / t_zwrite:.0f} MB/s "
              f"(blob {zlayer.size / 1e6:.0f} MB)")
        for name, lay in (("gzip", layer), ("zstd", zlayer)):
            dest = work / f"extract-{name}"
            dest.mkdir()
            os.sync()  # don't charge the writeback of the steps above to the extraction
            with open(lay.path, "rb") as f:
                stats, t_ext = timed(extract_layer, f, dest)
            print(f"extraction {name}:              {t_ext:.2f} s for {stats.uncompressed_size / 1e6:.0f} MB "
                  f"-> {stats.uncompressed_size / 1e6 / t_ext:.0f} MB/s ({stats.entries} entries)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
