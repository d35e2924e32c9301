"""Overlay snapshots against the stat walk: the snapshot after a one-file RUN on a 100k-file root.

    python benchmarks/overlay_snapshot.py [--files 100000] [--runs 5] [--changed 1]

Needs root (the chroot sandbox). Prints, per method, the median time from the
end of the RUN to a ready ``Changes`` with the snapshotter's state updated:

* overlay: read the upper dir, move it onto the root, let the snapshotter adopt
  those paths (``take_paths(snapshot_tops(...))``); target under 50 ms;
* stat walk with inotify (``Snapshotter(root)``, the default);
* stat walk without inotify (``Snapshotter(root, watch=False)``): a full walk.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.snapshot import build_tree  # noqa: E402
from pybuildless.fs.overlay import snapshot_tops  # noqa: E402
from pybuildless.fs.snapshot import Snapshotter  # noqa: E402
from pybuildless.fs.users import ResolvedUser  # noqa: E402
from pybuildless.sandbox import ChrootSandbox  # noqa: E402
from pybuildless.sandbox.base import RunResult  # noqa: E402

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
ROOT_USER = ResolvedUser(0, 0, (), "/root", "root")


def make_root(root: Path, files: int) -> None:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/resolv.conf").write_text("")
    (root / "root").mkdir(mode=0o700)
    build_tree(root / "usr", files)


CHANGED = 1  # files each RUN writes besides the modified one (--changed)


def one_file_run(sandbox: ChrootSandbox, n: int, tag: str) -> RunResult:
    out = io.BytesIO()
    new = f"/new-{tag}-{n}"  # each method's RUNs add their own paths to the shared root
    script = (f"set -e; echo {tag}{n} > /usr/d0/s0/f0; /bin/busybox mkdir {new}; i=0; "
              f"while [ $i -lt {CHANGED} ]; do echo $i > {new}/$i; i=$((i+1)); done")
    result = sandbox.run(["/bin/sh", "-c", script], env=ENV, cwd="/", user=ROOT_USER, stdout=out)
    if result.exit_code != 0:
        raise SystemExit(f"RUN failed: {out.getvalue()!r}")
    return result


def bench_walk(root: Path, runs: int, watch: bool) -> tuple[float, int]:
    snap = Snapshotter(root, watch=watch)
    snap.baseline()
    times, found = [], 0
    with ChrootSandbox(root) as sandbox:
        for n in range(runs):
            one_file_run(sandbox, n, "inotify" if watch else "walk")
            started = time.perf_counter()
            changes = snap.take()
            times.append(time.perf_counter() - started)
            found = len(changes.paths)
    snap.close()
    return statistics.median(times), found


def bench_overlay(root: Path, runs: int) -> tuple[float, float, int]:
    snap = Snapshotter(root)
    snap.baseline()
    times, read_apply, found = [], [], 0
    with ChrootSandbox(root, overlay=True) as sandbox:
        if not sandbox.overlay:
            raise SystemExit("overlay mounts are refused here (see the log); nothing to measure")
        for n in range(runs):
            result = one_file_run(sandbox, n, "overlay")
            started = time.perf_counter()
            changes = result.changes
            assert changes is not None
            snap.take_paths(snapshot_tops(changes))
            adopt = time.perf_counter() - started
            read_apply.append(sandbox.overlay_seconds)
            times.append(sandbox.overlay_seconds + adopt)
            found = len(changes.paths)
    snap.close()
    return statistics.median(times), statistics.median(read_apply), found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--changed", type=int, default=1, help="new files per RUN (1: the one-file case)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    global CHANGED
    CHANGED = args.changed
    work = Path(tempfile.mkdtemp(prefix="pybuildless-overlay-bench-", dir=args.dir))
    try:
        root = work / "root"
        started = time.perf_counter()
        make_root(root, args.files)
        print(f"root: {args.files} files in {time.perf_counter() - started:.1f}s; {args.runs} RUNs each writing {args.changed} new file(s) "
              "and changing one")
        ovl, ovl_io, n_ovl = bench_overlay(root, args.runs)
        inotify, n_ino = bench_walk(root, args.runs, watch=True)
        full, n_full = bench_walk(root, args.runs, watch=False)
        print(f"{'overlay upper dir':32s} {ovl * 1000:9.1f} ms  ({ovl_io * 1000:.1f} ms read+apply; "
              f"{n_ovl} paths)  target < 50 ms")
        print(f"{'stat walk, inotify':32s} {inotify * 1000:9.1f} ms  ({n_ino} paths)")
        print(f"{'stat walk, no inotify (full)':32s} {full * 1000:9.1f} ms  ({n_full} paths)")
        return 0 if ovl < 0.05 or args.changed > 1 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
