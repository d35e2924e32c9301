#!/usr/bin/env python3
"""What a stage root from a base layer costs: unpacking the blob (no store) against the layer
store (first unpack, then each later use: check + overlay mount, or check + copy).

  python3 benchmarks/layer_store.py LAYER.tar.gz [--runs N] [--work DIR]

LAYER.tar.gz is any layer blob, e.g. ``python-base.tar`` from docker/make_local_bases.py,
gzipped. Overlay mounts need root; they happen in a child's private mount namespace.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pybuildless.fs.compress import inspect_blob  # noqa: E402
from pybuildless.fs.extract import extract_layer  # noqa: E402
from pybuildless.image.model import FileLayer  # noqa: E402
from pybuildless.store.copy import copy_layers  # noqa: E402
from pybuildless.store.layers import LayerStore  # noqa: E402

MOUNT_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from pybuildless.sandbox import _linux
t = time.perf_counter()
_linux.unshare(_linux.CLONE_NEWNS)
_linux.mount(None, '/', None, _linux.MS_REC | _linux.MS_PRIVATE)
_linux.mount('overlay', {merged!r}, 'overlay', 0,
             'lowerdir={lower},upperdir={upper},workdir={work},index=off,metacopy=off,redirect_dir=nofollow')
print(time.perf_counter() - t)
"""


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("blob", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    with open(args.blob, "rb") as f:
        info = inspect_blob(f)
    layer = FileLayer(args.blob, info.digest, info.diff_id, info.size, info.media_type)
    work = Path(tempfile.mkdtemp(prefix="layer-store-bench-", dir=args.work))
    repo = str(Path(__file__).resolve().parent.parent)
    rows: dict[str, list[float]] = {k: [] for k in
                                    ("unpack blob (no store)", "remove that root", "store: first unpack",
                                     "store: check + lease", "store: full check", "store: copy to a root",
                                     "store: overlay mount", "remove empty upper")}
    try:
        for i in range(args.runs):
            root = work / f"classic{i}"
            root.mkdir()

            def classic() -> None:
                with open(args.blob, "rb") as blob:
                    extract_layer(blob, root, expect_diff_id=layer.diff_id)
            rows["unpack blob (no store)"].append(timed(classic))
            rows["remove that root"].append(timed(lambda: shutil.rmtree(root)))

            store = LayerStore(work / f"store{i}")
            rows["store: first unpack"].append(timed(lambda: store.acquire(layer).close()))
            leases = []
            rows["store: check + lease"].append(timed(lambda: leases.append(store.acquire(layer))))
            rows["store: full check"].append(timed(lambda: store.verify(layer.diff_id)))
            dest = work / f"copy{i}"
            dest.mkdir()
            rows["store: copy to a root"].append(timed(lambda: copy_layers([leases[0].path], dest)))
            shutil.rmtree(dest)
            if os.geteuid() == 0:
                merged, upper, wdir = work / f"m{i}", work / f"u{i}", work / f"w{i}"
                for d in (merged, upper, wdir):
                    d.mkdir()
                out = subprocess.run([sys.executable, "-c", MOUNT_CHILD.format(
                    repo=repo, merged=str(merged), lower=leases[0].path, upper=upper, work=wdir)],
                    capture_output=True, text=True, check=True)
                rows["store: overlay mount"].append(float(out.stdout))
                rows["remove empty upper"].append(timed(lambda: (shutil.rmtree(upper), shutil.rmtree(wdir))))
            leases[0].close()
            shutil.rmtree(work / f"store{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta_entries = info.uncompressed_size
    print(f"layer {args.blob.name}: {info.size / 1e6:.1f} MB compressed, {meta_entries / 1e6:.1f} MB tar, "
          f"{args.runs} runs, medians (min-max)")
    for name, values in rows.items():
        if values:
            print(f"  {name:28s} {statistics.median(values) * 1000:9.1f} ms "
                  f"({min(values) * 1000:.1f}-{max(values) * 1000:.1f})")


if __name__ == "__main__":
    main()
