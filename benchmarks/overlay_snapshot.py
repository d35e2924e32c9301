"""Overlay snapshots against the stat walk: the snapshot after a one-file RUN on a 100k-file root.

    python benchmarks/overlay_snapshot.py [--files 100000] [--runs 5]

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


def one_file_run(sandbox: ChrootSandbox, n: int) -> None:
    out = io.BytesIO()
    code = sandbox.run(["/bin/sh", "-c", f"echo {n} > /usr/d0/s0/f0 && echo {n} > /new{n}"], env=ENV, cwd="/",
                       user=ROOT_USER, stdout=out)
    if code != 0:
        raise SystemExit(f"RUN failed: {out.getvalue()!r}")


def bench_walk(root: Path, runs: int, watch: bool) -> tuple[float, int]:
    snap = Snapshotter(root, watch=watch)
    snap.baseline()
    times, found = [], 0
    with ChrootSandbox(root) as sandbox:
        for n in range(runs):
            one_file_run(sandbox, n)
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
            one_file_run(sandbox, n)
            started = time.perf_counter()
            changes = sandbox.take_overlay_changes()
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
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pybuildless-overlay-bench-", dir=args.dir))
    try:
        root = work / "root"
        started = time.perf_counter()
        make_root(root, args.files)
        print(f"root: {args.files} files in {time.perf_counter() - started:.1f}s; {args.runs} one-file RUNs each")
        ovl, ovl_io, n_ovl = bench_overlay(root, args.runs)
        inotify, n_ino = bench_walk(root, args.runs, watch=True)
        full, n_full = bench_walk(root, args.runs, watch=False)
        print(f"{'overlay upper dir':32s} {ovl * 1000:9.1f} ms  ({ovl_io * 1000:.1f} ms read+apply; "
              f"{n_ovl} paths)  target < 50 ms")
        print(f"{'stat walk, inotify':32s} {inotify * 1000:9.1f} ms  ({n_ino} paths)")
        print(f"{'stat walk, no inotify (full)':32s} {full * 1000:9.1f} ms  ({n_full} paths)")
        return 0 if ovl < 0.05 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
