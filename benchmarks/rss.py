#!/usr/bin/env python3
"""Peak RSS of pybuildless while it builds and pushes an image with a 1 GB layer (target < 150 MB).

Three builds, pushed to a loopback registry:
  run   ``RUN dd if=/dev/urandom of=/big bs=1M count=1024`` on busybox: the snapshot finds one 1 GB file
  copy  ``COPY big /big`` of a 1 GB random file in the context: hashed for the key, copied, snapshotted
  base  ``FROM`` the image of ``run`` + ``RUN true``: the 1 GB layer streamed from the registry into
        the layer store (an empty one in a temp dir) and unpacked there; its push mounts the layer
Random bytes, so gzip cannot shrink the layer: the compressed blob is also ~1 GB.

The figure is the pybuildless process's own high-water mark (VmHWM, polled until it exits); the
``tree`` column is wait4's ru_maxrss, the largest of it and the RUN processes. Needs root.
``--size-mb`` changes the layer size; ``--profile DIR`` writes cProfile output per build.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import ROOT, precompile, pybuildless_env, run_measured  # noqa: E402
from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402

TARGET_MB = 150


def write_random_file(path: Path, size_mb: int) -> None:
    chunk = 1024 * 1024
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(chunk))


def build(ctx: Path, base: str, dest: str, work_dir: Path, profile: Path | None, cache: Path):
    work_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        argv += ["-m", "cProfile", "-o", str(profile / f"{ctx.name}.prof")]
    argv += ["-m", "pybuildless", "build", "-c", str(ctx), "-f", str(ctx / "Dockerfile"), "--build-arg",
             f"BASE={base}", "-d", dest, "--work-dir", str(work_dir)]
    env = {**pybuildless_env(), "XDG_CACHE_HOME": str(cache)}  # the layer store, never the user's own
    return run_measured(argv, cwd=ROOT, poll=0.005, env=env).check()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--only", choices=["run", "copy", "base"], action="append")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("rss.py needs root (chroot RUN steps)")
    modes = args.only or ["run", "copy", "base"]
    if "base" in modes and "run" not in modes:
        modes.insert(0, "run")  # base builds on the image run pushes
    ok = True
    with tempfile.TemporaryDirectory(prefix="pybuildless-rss-") as tmp:
        work = Path(tmp)
        server, stop = start_registry(work / "registry")
        try:
            precompile()
            layout = write_oci_layout(make_busybox_rootfs(work / "rootfs"), work / "layout")
            base = push_layout(layout, server, "bench/busybox:latest")
            for mode in modes:
                ctx = work / mode
                ctx.mkdir()
                build_base = base
                if mode == "run":
                    step = f"RUN dd if=/dev/urandom of=/big bs=1M count={args.size_mb} 2>/dev/null && ls -l /big"
                elif mode == "base":
                    build_base = server.ref("bench/rss:run")
                    step = "RUN test -s /big"
                else:
                    write_random_file(ctx / "big", args.size_mb)
                    step = "COPY big /big"
                (ctx / "Dockerfile").write_text(f"ARG BASE\nFROM ${{BASE}}\n{step}\n")
                run = build(ctx, build_base, server.ref(f"bench/rss:{mode}"), work / "pyb" / mode, args.profile,
                            work / "xdg-cache")
                peak = run.peak_rss_kb / 1024
                ok &= peak < TARGET_MB
                print(f"[{'ok' if peak < TARGET_MB else 'FAIL'}] {mode}: {args.size_mb} MB layer built and pushed in "
                      f"{run.seconds:.1f}s, peak RSS {peak:.1f} MB (tree {run.tree_rss_kb / 1024:.1f} MB), "
                      f"target < {TARGET_MB} MB", flush=True)
                if mode == "copy":
                    (ctx / "big").unlink()
        finally:
            stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
