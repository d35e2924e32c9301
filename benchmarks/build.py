"""Build benchmark: the differential Dockerfiles plus heavier cases, built cold by pybuildless and by
buildah (``bud --isolation chroot --layers``, fresh vfs storage per build), each pushed to a local
registry started here. Prints seconds per builder, the ratio pybuildless/buildah and the median ratio.

    python benchmarks/build.py [--case NAME ...] [--no-heavy]

Needs root, buildah, skopeo and docker-registry (see Makefile). Timings include pulling the base and
pushing the result, as a CI build job would.
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
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.differential import Buildah, case_names, copy_case  # noqa: E402
from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402


def _many_files_run(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(
        "ARG BASE\nFROM $BASE\n"
        "RUN mkdir /many && cd /many && for d in $(seq 1 50); do mkdir d$d; "
        "for f in $(seq 1 100); do echo $d-$f > d$d/f$f; done; done\n"
    )


def _big_context(ctx: Path) -> None:
    """~2000 files, ~50 MB (half random, half compressible), copied in one COPY."""
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nCOPY . /ctx/\n")
    random_block = os.urandom(1 << 20)
    text_block = (b"lorem ipsum dolor sit amet " * 40000)[: 1 << 20]
    for i in range(2000):
        d = ctx / f"pkg{i // 100}"
        d.mkdir(exist_ok=True)
        src = random_block if i % 2 else text_block
        off = (i * 4099) % (len(src) - 26_000)
        (d / f"file{i}").write_bytes(src[off: off + 26_000])


HEAVY_CASES: dict[str, Callable[[Path], None]] = {
    "heavy_run_5000_files": _many_files_run,
    "heavy_context_2000_files_50mb": _big_context,
}


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_with_pybuildless(ctx: Path, ref: str, base: str, work: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
         "--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
         "--build-arg", f"BASE={base}"],
        cwd=work, env=env, capture_output=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"pybuildless failed on {ctx}:\n{proc.stderr.decode(errors='replace')[-3000:]}")


def build_with_buildah(ctx: Path, ref: str, base: str, work: Path, registry_host: str) -> None:
    home = work / "buildah"
    try:
        Buildah.create(home, registry_host).build_and_push(ctx, ref, {"BASE": base})
    finally:
        shutil.rmtree(home, ignore_errors=True)  # cold: fresh storage for every build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", help="only these cases (repeatable; default: all)")
    ap.add_argument("--no-heavy", action="store_true", help="skip the heavy generated cases")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("buildah"):
        print("needs root and buildah", file=sys.stderr)
        return 2

    cases: list[tuple[str, Callable[[Path], None]]] = [
        (name, lambda dest, name=name: copy_case(name, dest)) for name in case_names()]
    if not args.no_heavy:
        cases += list(HEAVY_CASES.items())
    if args.case:
        known = {name for name, _ in cases}
        unknown = set(args.case) - known
        if unknown:
            print(f"unknown case(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}",
                  file=sys.stderr)
            return 2
        cases = [c for c in cases if c[0] in args.case]

    work = Path(tempfile.mkdtemp(prefix="pybuildless-build-bench-", dir=args.dir))
    server, stop = start_registry(work / "registry")
    try:
        base = push_layout(write_oci_layout(make_busybox_rootfs(work / "busybox"), work / "busybox-layout"),
                           server, "base/busybox:latest")
        rows = []
        print(f"{'case':34} {'pybuildless s':>13} {'buildah s':>10} {'ratio':>7}", flush=True)
        for name, make_context in cases:
            case_dir = work / name
            make_context(case_dir / "ctx")
            repo = name.replace("_", "-")
            ours = _time(lambda: build_with_pybuildless(case_dir / "ctx", server.ref(f"bench/{repo}:pybuildless"),
                                                        base, case_dir))
            theirs = _time(lambda: build_with_buildah(case_dir / "ctx", server.ref(f"bench/{repo}:buildah"),
                                                      base, case_dir, server.host))
            rows.append((name, ours, theirs, ours / theirs))
            print(f"{name:34} {ours:13.2f} {theirs:10.2f} {ours / theirs:7.2f}", flush=True)
            shutil.rmtree(case_dir, ignore_errors=True)
        median = statistics.median(r[3] for r in rows)
        print(f"{'median ratio (pybuildless/buildah)':34} {'':13} {'':10} {median:7.2f}")
        print(f"{'total':34} {sum(r[1] for r in rows):13.2f} {sum(r[2] for r in rows):10.2f}")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
