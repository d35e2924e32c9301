"""Build benchmark: the differential Dockerfiles plus heavier cases, built cold by pybuildless and by
buildah (``bud --isolation chroot --layers``, fresh vfs storage per build), each pushed to a local
registry started here. buildah is the reference, measured in the same run on the same machine.

    python benchmarks/build.py [--case NAME ...] [--no-heavy] [--samples N]

Method, so that a figure means something on a shared machine:
- bytecode is compiled and each builder does one untimed warm-up build before any timing, so the
  first case is not charged for compilation, cold page cache or first-run setup;
- every case is built ``--samples`` times by each builder, alternating which goes first, so drift
  in the machine's load falls on both;
- only the build itself is timed: creating buildah's storage and removing it (and pybuildless's
  scratch) happen outside the timed region;
- each figure is printed as median with its noise, the spread (max - min) / 2 relative to the
  median; the ratio is of the medians, with the two noises combined.

Needs root, buildah, skopeo and docker-registry (see Makefile). Timings include pulling the base and
pushing the result, as a CI build job would.
"""

from __future__ import annotations

import argparse
import compileall
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

from tests.differential import Buildah, buildah_case_names, copy_case  # noqa: E402
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


def _noise(samples: list[float]) -> float:
    """Half the spread of the samples, relative to their median (0 for a single sample)."""
    return (max(samples) - min(samples)) / 2 / statistics.median(samples) if len(samples) > 1 else 0.0


def _figure(samples: list[float]) -> str:
    return f"{statistics.median(samples):7.2f} ±{100 * _noise(samples):3.0f}%"


def build_with_pybuildless(ctx: Path, ref: str, base: str, work: Path) -> Callable[[], None]:
    """The build as a callable to time; the scratch it uses is prepared and removed outside."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scratch = work / "pybuildless"

    def build() -> None:
        proc = subprocess.run(
            [sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
             "--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
             "--build-arg", f"BASE={base}"],
            cwd=scratch, env=env, capture_output=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"pybuildless failed on {ctx}:\n{proc.stderr.decode(errors='replace')[-3000:]}")

    scratch.mkdir(parents=True, exist_ok=True)
    return build


def build_with_buildah(ctx: Path, ref: str, base: str, work: Path, registry_host: str) -> Callable[[], None]:
    buildah = Buildah.create(work / "buildah", registry_host)  # cold: fresh storage for every build
    return lambda: buildah.build_and_push(ctx, ref, {"BASE": base})


def timed(prepare: Callable[[], Callable[[], None]], cleanup: Callable[[], None]) -> float:
    """Seconds of the build only: ``prepare`` and ``cleanup`` run outside the timed region."""
    build = prepare()
    try:
        start = time.perf_counter()
        build()
        return time.perf_counter() - start
    finally:
        cleanup()


def measure(name: str, make_context: Callable[[Path], None], samples: int, work: Path, server, base: str
            ) -> tuple[list[float], list[float]]:
    case_dir = work / name
    make_context(case_dir / "ctx")
    repo = name.replace("_", "-")
    ctx = case_dir / "ctx"
    builders = {
        "ours": lambda: build_with_pybuildless(ctx, server.ref(f"bench/{repo}:pybuildless"), base, case_dir),
        "theirs": lambda: build_with_buildah(ctx, server.ref(f"bench/{repo}:buildah"), base, case_dir, server.host),
    }
    scratch = {"ours": case_dir / "pybuildless", "theirs": case_dir / "buildah"}
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    try:
        for i in range(samples):
            order = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")
            for who in order:
                times[who].append(timed(builders[who], lambda who=who: shutil.rmtree(scratch[who], ignore_errors=True)))
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)
    return times["ours"], times["theirs"]


def warm_up(work: Path, server, base: str) -> None:
    """Compile bytecode and do one untimed build per builder (not charged to the first case)."""
    compileall.compile_dir(str(ROOT / "pybuildless"), quiet=1)
    def tiny(ctx: Path) -> None:
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nRUN echo warm > /warm\n")
    measure("warm_up", tiny, 1, work, server, base)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", help="only these cases (repeatable; default: all)")
    ap.add_argument("--no-heavy", action="store_true", help="skip the heavy generated cases")
    ap.add_argument("--samples", type=int, default=3, help="builds per builder and case (default 3)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    if args.samples < 1:
        print("--samples: must be at least 1", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or not shutil.which("buildah"):
        print("needs root and buildah", file=sys.stderr)
        return 2

    cases: list[tuple[str, Callable[[Path], None]]] = [
        (name, lambda dest, name=name: copy_case(name, dest)) for name in buildah_case_names()]
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
        warm_up(work, server, base)
        ratios = []
        print(f"{args.samples} sample(s) per builder and case, alternating order; median ±noise "
              "(half the spread, of the median)")
        print(f"{'case':34} {'pybuildless s':>13} {'buildah s':>13} {'ratio':>12}", flush=True)
        for name, make_context in cases:
            ours, theirs = measure(name, make_context, args.samples, work, server, base)
            ratio = statistics.median(ours) / statistics.median(theirs)
            noise = _noise(ours) + _noise(theirs)
            ratios.append(ratio)
            print(f"{name:34} {_figure(ours):>13} {_figure(theirs):>13} {ratio:7.2f} ±{100 * noise:2.0f}%",
                  f"  (min {min(ours):.2f} / {min(theirs):.2f})", flush=True)
        median = statistics.median(ratios)
        spread = (max(ratios) - min(ratios)) / 2 / median if len(ratios) > 1 else 0.0
        print(f"{'median ratio (pybuildless/buildah)':34} {'':13} {'':13} {median:7.2f} ±{100 * spread:2.0f}%"
              "  (± = spread across cases)")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
