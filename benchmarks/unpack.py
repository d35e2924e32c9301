#!/usr/bin/env python3
"""Unpacking one layer: the extractor of this tree against that of another revision, in one run.

    python3 benchmarks/unpack.py [--layer BLOB] [--old REV] [--samples N] [--store] [--work DIR]

Without ``--layer`` a Debian-sized layer is made first (debian_rootfs.py: about 6,100 entries,
116 MB, one gzip blob). Each sample unpacks the blob once with each tree, alternating which goes
first, each in a child process into an empty directory (``extract_layer``; with ``--store``,
the whole ``LayerStore.acquire``: extraction, overlay form, fingerprint, rename). Printed per
tree: median wall seconds, median CPU seconds (user + system, all threads), and the ratio of the
medians new/old, with the load average before and after: on a shared machine read wall times
together with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
blob, dest, store = sys.argv[2], sys.argv[3], sys.argv[4] == "store"
from pybuildless.fs.compress import inspect_blob
from pybuildless.fs.extract import extract_layer
if store:
    from pybuildless.image.model import FileLayer
    from pybuildless.store.layers import LayerStore
    with open(blob, "rb") as f:
        info = inspect_blob(f)
    layer = FileLayer(blob, info.digest, info.diff_id, info.size, info.media_type)
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
if store:
    LayerStore(dest).acquire(layer).close()
else:
    with open(blob, "rb") as f:
        extract_layer(f, dest, whiteouts=False)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def debian_layer(work: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from debian_rootfs import make_debian_rootfs
    from tests.fixtures.images import write_oci_layout

    rootfs = make_debian_rootfs(work / "rootfs")
    layout = write_oci_layout(rootfs, work / "layout")
    shutil.rmtree(rootfs)
    blobs = sorted((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    return blobs[-1]  # the layer: far bigger than the config and the manifest


def tree_of(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def one(source: Path, blob: Path, work: Path, store: bool) -> dict:
    dest = Path(tempfile.mkdtemp(dir=work, prefix="unpack-"))
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(source), str(blob), str(dest),
                              "store" if store else "tree"], check=True, capture_output=True, text=True).stdout
        return json.loads(out.splitlines()[-1])
    finally:
        subprocess.run(["rm", "-rf", str(dest)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=Path, help="a layer blob (default: a Debian-sized one made here)")
    ap.add_argument("--old", default="HEAD", help="the revision to compare with (default HEAD)")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--store", action="store_true", help="time LayerStore.acquire, not extract_layer alone")
    ap.add_argument("--work", type=Path, help="parent of the scratch directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unpack-bench-", dir=args.work))
    try:
        blob = args.layer.resolve() if args.layer else debian_layer(work / "base")
        trees = {"old": tree_of(args.old, work / "old"), "new": ROOT}
        print(f"layer {blob} ({blob.stat().st_size} bytes); old = {args.old}, new = {ROOT} (working tree); "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)")
        results: dict[str, list[dict]] = {"old": [], "new": []}
        for i in range(args.samples):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for name in order:
                r = one(trees[name], blob, work, args.store)
                results[name].append(r)
                print(f"  sample {i + 1} {name}: wall {r['wall']:.3f}s cpu {r['cpu']:.3f}s", flush=True)
        for key in ("wall", "cpu"):
            old = statistics.median(r[key] for r in results["old"])
            new = statistics.median(r[key] for r in results["new"])
            print(f"{key:4s} median: old {old:.3f}s  new {new:.3f}s  new/old {new / old:.2f}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
