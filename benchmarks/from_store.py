#!/usr/bin/env python3
"""What FROM of a Debian-sized base costs once its layer is in the store, end to end through the CLI.

  python3 benchmarks/from_store.py [--runs N] [--base debian|python|busybox] [--copies N] [--other DIR] [--profile DIR]

Makes the base from this machine's installed packages (benchmarks/debian_rootfs.py), pushes it to a
docker-registry started on loopback, then builds ``FROM base`` + ``RUN true`` (+ ``--copies`` COPY
steps) N+1 times on one store
(the first run fills it) and N times with ``--no-layer-store``. Printed per mode, medians (min-max):

* resolve: the base's manifest and config (one HEAD by tag once they are kept), with the process's
  HTTP session already up (a build opens it before FROM when it checks its destinations), and
  the first resolve of a process, which also pays for the session and the connection;
* root: the stage root from the store (check + overlay mount, or a copy, and the snapshot
  baseline where the root has one), or the blob extracted: ``StageBuilder.ensure_root`` timed
  inside the build process;
* FROM: resolve + root, i.e. what FROM costs before the first step runs;
* build: the whole command, push excluded (``--no-push``).

Builds run as the executor image runs them (``benchmarks/launch.py``: ``python -I -S``, the tree's
own ``sys.path``). ``--other DIR`` also times the warm-store builds of another checkout (e.g. a
``git worktree`` of an earlier commit), alternating with this one in the same run, so both see the
same load. ``--profile DIR`` writes a cProfile file per warm-store build of this tree into DIR.
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
from launch import bootstrap, entry_body  # noqa: E402
from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402

MAKERS = {"debian": make_debian_rootfs, "python": make_python_rootfs, "busybox": make_busybox_rootfs}
_ROOT = re.compile(r"^bench: root laid in ([\d.]+) ms$", re.M)

# StageBuilder.ensure_root timed in the build process (the progress line has 10 ms steps)
TIMED_ROOT = """
import sys as _sys, time as _time
import pybuildless.builder.stage as _stage
_ensure_root = _stage.StageBuilder.ensure_root
def _timed_ensure_root(self):
    laying = self.root.snapshotter is None and bool(self.state.layers)
    started = _time.perf_counter()
    _ensure_root(self)
    if laying:
        _sys.stderr.write(f"bench: root laid in {(_time.perf_counter() - started) * 1000:.2f} ms\\n")
_stage.StageBuilder.ensure_root = _timed_ensure_root
"""
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


def run_build(source: Path, ctx: Path, work: Path, cache: Path, *flags: str,
              profile: Path | None = None) -> tuple[float, float]:
    """One build by the tree at ``source``: (root seconds, whole command seconds)."""
    program = bootstrap(source, TIMED_ROOT + entry_body("executor_main", profile))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-I", "-S", "-X", f"pycache_prefix={work / 'pycache'}", "-c", program,
                           "--context", str(ctx), "--no-push", "--work-dir", str(work / "w"), *flags],
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)}, capture_output=True, text=True)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr}")
    found = _ROOT.search(proc.stderr)
    if not found:
        raise SystemExit(f"no stage-root line in the build log:\n{proc.stderr}")
    return float(found.group(1)) / 1000, total


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
    ap.add_argument("--other", type=Path, help="another source tree, timed with the warm store too")
    ap.add_argument("--profile", type=Path, help="a cProfile file per warm-store build of this tree here")
    ap.add_argument("--copies", type=int, default=0, help="COPY steps after the RUN (each its own snapshot)")
    args = ap.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="from-store-bench-"))
    server, stop = start_registry(work / "registry")
    try:
        rootfs = MAKERS[args.base](work / "rootfs")
        entries = sum(len(d) + len(f) for _, d, f in os.walk(rootfs))
        layout = write_oci_layout(rootfs, work / "layout")
        ref = push_layout(layout, server, f"bench/{args.base}:1")
        ctx = work / "ctx"
        ctx.mkdir()
        copies = "".join(f"COPY f{n} /srv/c{n}/\n" for n in range(args.copies))
        for n in range(args.copies):
            (ctx / f"f{n}").write_text(f"{n}\n")
        (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN true\n{copies}")
        (work / "w").mkdir()
        cache = work / "cache"
        store = str(cache / "pybuildless")
        here = HERE.parent
        modes = [("store (warm)", here, ()), ("no store", here, ("--no-layer-store",))]
        if args.other:
            modes.insert(1, (f"store (warm), {args.other}", args.other, ()))
        rows: dict[str, dict[str, list[float]]] = {mode: {} for mode, _, _ in modes}
        first_root, first_total = run_build(here, ctx, work, cache)  # fills the store
        if args.other:
            run_build(args.other, ctx, work, cache)  # its byte-code caches, untimed
        for n in range(args.runs):
            for mode, source, flags in modes:
                profile = args.profile / f"build-{n}.prof" if args.profile and source == here and not flags else None
                root, total = run_build(source, ctx, work, cache, *flags, profile=profile)
                first, resolve = resolve_time(ref, "" if flags else store)
                for name, value in (("resolve, a process's first", first), ("resolve", resolve), ("root", root),
                                    ("FROM", resolve + root), ("build", total)):
                    rows[mode].setdefault(name, []).append(value)
        load = os.getloadavg()
        print(f"base {args.base}: {entries} entries, {args.copies} COPY steps, {args.runs} runs; first build "
              f"(store filled): "
              f"root {first_root * 1000:.0f} ms, build {first_total:.2f} s; load average after: "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        for mode, values in rows.items():
            print(f"  {mode}")
            for name, series in values.items():
                print(f"    {name:26s} {fmt(series)}")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
