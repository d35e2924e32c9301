#!/usr/bin/env python3
"""What FROM of a Debian-sized base costs once its layer is in the store, end to end through the CLI.

  python3 benchmarks/from_store.py [--runs N] [--base debian|python|busybox]

Makes the base from this machine's installed packages (benchmarks/debian_rootfs.py), pushes it to a
docker-registry started on loopback, then builds ``FROM base`` + ``RUN true`` N+1 times on one store
(the first run fills it) and N times with ``--no-layer-store``. Printed per mode, medians (min-max):

* resolve: the base's manifest and config (one HEAD by tag once they are kept), with the process's
  HTTP session already up (a build opens it before FROM when it checks its destinations), and
  the first resolve of a process, which also pays for the session and the connection;
* root: the stage root from the store (check + overlay mount, or a copy), or the blob extracted;
* FROM: resolve + root, i.e. what FROM costs before the first step runs;
* build: the whole command, push excluded (``--no-push``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from debian_rootfs import make_debian_rootfs, make_python_rootfs  # noqa: E402
from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402

MAKERS = {"debian": make_debian_rootfs, "python": make_python_rootfs, "busybox": make_busybox_rootfs}
_ROOT = re.compile(r"(?:laid from the layer store|extracted) (\d+) layer\(s\) of \S+ in ([\d.]+)s")
_RESOLVE = re.compile(r"resolve ([\d.]+)s")
_FIRST = re.compile(r"first ([\d.]+)s")

TIMED_RESOLVE = """
import sys, time
sys.path.insert(0, {repo!r})
from pybuildless.registry.remote import fetch_image
from pybuildless.store.manifests import ManifestRecord
t = time.perf_counter()
fetch_image({ref!r}, documents=ManifestRecord({store!r}) if {store!r} else None)
print(f"first {{time.perf_counter() - t:.4f}}s")
t = time.perf_counter()
fetch_image({ref!r}, documents=ManifestRecord({store!r}) if {store!r} else None)
print(f"resolve {{time.perf_counter() - t:.4f}}s")
"""


def run_build(ctx: Path, work: Path, cache: Path, *flags: str) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
                           "--context", str(ctx), "--no-push", "--work-dir", str(work), *flags],
                          env={**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(HERE.parent)},
                          capture_output=True, text=True)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr}")
    found = _ROOT.search(proc.stderr)
    if not found:
        raise SystemExit(f"no stage-root line in the build log:\n{proc.stderr}")
    return float(found.group(2)), total


def resolve_time(ref: str, store: str) -> tuple[float, float]:
    """(the first resolve of a process: its HTTP session and connection too; a later one)."""
    out = subprocess.run([sys.executable, "-c", TIMED_RESOLVE.format(repo=str(HERE.parent), ref=ref, store=store)],
                         capture_output=True, text=True, check=True).stdout
    return float(_FIRST.search(out).group(1)), float(_RESOLVE.search(out).group(1))


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base", choices=sorted(MAKERS), default="debian")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="from-store-bench-"))
    server, stop = start_registry(work / "registry")
    try:
        rootfs = MAKERS[args.base](work / "rootfs")
        entries = sum(len(d) + len(f) for _, d, f in os.walk(rootfs))
        layout = write_oci_layout(rootfs, work / "layout")
        ref = push_layout(layout, server, f"bench/{args.base}:1")
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN true\n")
        (work / "w").mkdir()
        cache = work / "cache"
        store = str(cache / "pybuildless")
        rows: dict[str, dict[str, list[float]]] = {"store (warm)": {}, "no store": {}}
        first_root, first_total = run_build(ctx, work / "w", cache)  # fills the store
        for _ in range(args.runs):
            for mode, flags, kept in (("store (warm)", (), store), ("no store", ("--no-layer-store",), "")):
                root, total = run_build(ctx, work / "w", cache, *flags)
                first, resolve = resolve_time(ref, kept)
                for name, value in (("resolve, a process's first", first), ("resolve", resolve), ("root", root),
                                    ("FROM", resolve + root), ("build", total)):
                    rows[mode].setdefault(name, []).append(value)
        print(f"base {args.base}: {entries} entries, {args.runs} runs; first build (store filled): "
              f"root {first_root * 1000:.0f} ms, build {first_total:.2f} s")
        for mode, values in rows.items():
            print(f"  {mode}")
            for name, series in values.items():
                print(f"    {name:26s} {fmt(series)}")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
