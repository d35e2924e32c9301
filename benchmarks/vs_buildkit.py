#!/usr/bin/env python3
"""Whole builds, pybuildless against BuildKit (Debian's dockerd 20.10 with DOCKER_BUILDKIT=1), in one run.

    sudo python3 benchmarks/vs_buildkit.py [--quick] [--mode warm|cold] [--case NAME ...]
                                           [--samples N] [--json FILE|-] [--profile DIR]

Corpus: every differential Dockerfile BuildKit 20.10 builds as written (tests/differential/, on the
busybox base) and the speed corpus of benchmarks/corpus/ (a small app on busybox, a RUN writing 6000
files on a Debian base, a Python venv on a Debian python3 base, a 5000-file / 100 MB context). The
bases are made from this machine's files (busybox-static; the installed Debian packages, see
debian_rootfs.py) and pushed to a loopback docker-registry started here; both builders pull from
it and push every image to it. dockerd runs with its own data root under the scratch directory.

Modes:
- warm: the base images are already local for both: pulled into dockerd (``docker pull``) and in
  pybuildless's layer store (``--layer-store``, store under the scratch directory) before timing;
  between builds BuildKit's build cache is pruned and the built image removed, so no step is cached.
- cold: before every build BuildKit's images and build cache are removed (``docker image rm``,
  ``docker builder prune -af``) and pybuildless's store is emptied: both pull and unpack the base.

pybuildless runs as the executor image runs it (benchmarks/launch.py): ``python -I -S`` with
``sys.path`` set to the standard library, the measured tree and the site-packages directories of
its runtime dependencies, so none of this machine's ``.pth`` start-up hooks (certifi, coverage,
an editable install's finder: ~27 ms of every start here) is counted against it; ``/kaniko/executor``
is ``#!/kaniko/bin/python3 -IBS`` and never runs them.

Method: bytecode compiled and one untimed warm-up build per builder and base first; each case built
``--samples`` times by each builder, alternating which goes first; only build + push is timed
(resets, image removal, checks happen outside); every pushed manifest is checked to exist. Figures
are the median seconds with the noise (half the spread, relative to the median), the ratio of the
medians pybuildless/BuildKit (lower is faster) with the noises added, and per mode the totals (sum
of medians) and the median ratio. The load average is printed at the start and the end.
Needs root, dockerd (docker.io), docker-registry, busybox-static.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus import CORPUS, make_context_files  # noqa: E402
from debian_rootfs import make_debian_rootfs, make_python_rootfs  # noqa: E402
from tests.differential import case_names, copy_case, load_case  # noqa: E402
from tests.fixtures.dockerd import DOCKER_CLIENT, start_dockerd, stop_dockerd  # noqa: E402
from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402
from vs_buildkit_builders import BuildFailed, BuildKit, Pybuildless, manifest_exists  # noqa: E402

MODES = ("warm", "cold")
QUICK_CASES = ("small-app", "debian-files", "run_deletions")
BASE_MAKERS: dict[str, Callable[[Path], Path]] = {
    "busybox": make_busybox_rootfs, "debian": make_debian_rootfs, "python": make_python_rootfs}


@dataclass(frozen=True)
class Case:
    name: str
    base: str  # a key of BASE_MAKERS
    corpus: bool  # from benchmarks/corpus/ (else tests/differential/)

    def prepare(self, dest: Path, bases: dict[str, str]) -> Path:
        """The case's context in ``dest``, made once and read by both builders."""
        if not self.corpus:
            return copy_case(self.name, dest, bases["busybox"])
        shutil.copytree(CORPUS / self.name, dest)
        if self.name == "big-context":
            make_context_files(dest)
        return dest


CORPUS_CASES = (Case("small-app", "busybox", True), Case("debian-files", "debian", True),
                Case("python-venv", "python", True), Case("big-context", "busybox", True))


def all_cases() -> list[Case]:
    """The differential cases BuildKit builds as written (no reference Dockerfile), then the corpus."""
    differential = [Case(n, "busybox", False) for n in case_names()
                    if load_case(n).reference_dockerfile == "Dockerfile"]
    return differential + list(CORPUS_CASES)


@dataclass
class Samples:
    """The timed samples of one case in one mode."""
    case: str
    base: str
    pybuildless: list[float] = field(default_factory=list)
    buildkit: list[float] = field(default_factory=list)
    buildkit_build: list[float] = field(default_factory=list)
    buildkit_push: list[float] = field(default_factory=list)
    pybuildless_from: list[float] = field(default_factory=list)  # seconds laying base layers, per build
    pybuildless_from_how: list[str] = field(default_factory=list)  # "laid from the layer store" or "extracted"
    error: str = ""

    def ratio(self) -> float:
        return statistics.median(self.pybuildless) / statistics.median(self.buildkit)

    def noise(self) -> float:
        return noise(self.pybuildless) + noise(self.buildkit)


def noise(samples: list[float]) -> float:
    """Half the spread of the samples, relative to their median (0 for a single sample)."""
    return (max(samples) - min(samples)) / 2 / statistics.median(samples) if len(samples) > 1 else 0.0


def figure(samples: list[float]) -> str:
    return f"{statistics.median(samples):6.2f} ±{100 * noise(samples):3.0f}%"


# --- a run -------------------------------------------------------------------------------------

@dataclass
class Bench:
    work: Path
    server: object
    bases: dict[str, str]
    pyb: Pybuildless
    bk: BuildKit
    samples: int
    log: Callable[[str], None]

    def prime(self, mode: str, needed: set[str]) -> None:
        """Untimed: the bases local for both (warm), and one warm-up build per builder and base."""
        self.pyb.reset("cold")
        self.bk.reset("cold")
        for base in sorted(needed):
            ctx = self.work / "warm-up" / base
            if not ctx.exists():
                ctx.mkdir(parents=True)
                (ctx / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nRUN echo warm > /warm\n")
            if mode == "warm":
                self.bk.docker("pull", self.bases[base])
            self.pyb.reset("warm")
            self.pyb.build(ctx, self.bases[base], self.server.ref(f"bench/warm-up-{base}:pybuildless-{mode}"))
            self.bk.build(ctx, self.bases[base], self.server.ref(f"bench/warm-up-{base}:buildkit-{mode}"))
            self.bk.remove(self.server.ref(f"bench/warm-up-{base}:buildkit-{mode}"))
            self.bk.docker("builder", "prune", "-af")

    def measure(self, case: Case, ctx: Path, mode: str) -> Samples:
        result = Samples(case.name, case.base)
        base = self.bases[case.base]
        repo = f"bench/{case.name.replace('_', '-')}"
        for i in range(self.samples):
            order = ("pybuildless", "buildkit") if i % 2 == 0 else ("buildkit", "pybuildless")
            for who in order:
                dest = self.server.ref(f"{repo}:{who}-{mode}-{i}")
                if who == "pybuildless":
                    self.pyb.reset(mode)
                    seconds, laid, how = self.pyb.build(ctx, base, dest)
                    result.pybuildless.append(seconds)
                    result.pybuildless_from.append(laid)
                    result.pybuildless_from_how.append(how)
                else:
                    self.bk.reset(mode)
                    built, pushed = self.bk.build(ctx, base, dest)
                    result.buildkit.append(built + pushed)
                    result.buildkit_build.append(built)
                    result.buildkit_push.append(pushed)
                    self.bk.remove(dest)
                if not manifest_exists(dest):
                    raise BuildFailed(f"{who} reported success but {dest} is not in the registry")
        return result

    def run_mode(self, mode: str, cases: list[tuple[Case, Path]]) -> list[Samples]:
        self.prime(mode, {c.base for c, _ in cases} | {"busybox"})
        self.log(f"\nmode {mode}: {self.samples} sample(s) per builder and case, alternating order; "
                 "seconds median ±noise (half the spread, of the median); ratio = pybuildless/BuildKit")
        self.log(f"{'case':40} {'pybuildless':>12} {'BuildKit':>12} {'ratio':>11}  {'min pyb/bk':>11}"
                 f"  {'bk push':>7} {'pyb FROM':>8}")
        results = []
        for case, ctx in cases:
            try:
                s = self.measure(case, ctx, mode)
            except BuildFailed as e:
                results.append(Samples(case.name, case.base, error=str(e)))
                self.log(f"{case.name:40} FAILED: {e}")
                continue
            results.append(s)
            self.log(f"{case.name:40} {figure(s.pybuildless):>12} {figure(s.buildkit):>12} "
                     f"{s.ratio():6.2f} ±{100 * s.noise():2.0f}%  {min(s.pybuildless):5.2f}/{min(s.buildkit):<5.2f}"
                     f"  {statistics.median(s.buildkit_push):7.2f} {statistics.median(s.pybuildless_from):8.3f}")
        self.bk.reset("cold")  # leave no state to the next mode
        return results


def summary(mode: str, results: list[Samples]) -> dict:
    ok = [s for s in results if not s.error]
    if not ok:
        return {"mode": mode, "cases": len(results), "failed": len(results)}
    pyb = sum(statistics.median(s.pybuildless) for s in ok)
    bk = sum(statistics.median(s.buildkit) for s in ok)
    ratios = sorted(s.ratio() for s in ok)
    by_group: dict[str, dict] = {}
    for group, members in (("differential", [s for s in ok if s.base == "busybox" and s.case not in
                                              {c.name for c in CORPUS_CASES}]),
                           ("corpus", [s for s in ok if s.case in {c.name for c in CORPUS_CASES}])):
        if members:
            g_pyb = sum(statistics.median(s.pybuildless) for s in members)
            g_bk = sum(statistics.median(s.buildkit) for s in members)
            by_group[group] = {"cases": len(members), "pybuildless_total": g_pyb, "buildkit_total": g_bk,
                               "total_ratio": g_pyb / g_bk,
                               "median_ratio": statistics.median(s.ratio() for s in members)}
    return {"mode": mode, "cases": len(results), "failed": len(results) - len(ok),
            "pybuildless_total": pyb, "buildkit_total": bk, "total_ratio": pyb / bk,
            "median_ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
            "groups": by_group}


def print_summary(s: dict, log: Callable[[str], None]) -> None:
    if "total_ratio" not in s:
        log(f"mode {s['mode']}: every case failed")
        return
    log(f"mode {s['mode']}: total {s['pybuildless_total']:.1f}s pybuildless / {s['buildkit_total']:.1f}s "
        f"BuildKit = {s['total_ratio']:.2f}; median ratio {s['median_ratio']:.2f} "
        f"(cases {s['ratio_min']:.2f}..{s['ratio_max']:.2f}); {s['failed']} failed")
    for group, g in s["groups"].items():
        log(f"  {group}: {g['cases']} cases, total {g['pybuildless_total']:.1f}s / {g['buildkit_total']:.1f}s "
            f"= {g['total_ratio']:.2f}, median ratio {g['median_ratio']:.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_CASES)}, 2 samples")
    ap.add_argument("--case", action="append", help="only these cases (repeatable; default: all)")
    ap.add_argument("--mode", action="append", choices=MODES, help="warm and/or cold (default: both)")
    ap.add_argument("--samples", type=int, default=None, help="builds per builder, case and mode (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE ('-': stdout)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="run pybuildless under cProfile: a .prof and its log (.log) per build in DIR")
    ap.add_argument("--pybuildless-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every pybuildless build, e.g. --pybuildless-arg=-v=debug (repeatable)")
    ap.add_argument("--source", type=Path, default=ROOT, metavar="DIR",
                    help="the pybuildless tree to measure (holding pybuildless/; default: this checkout)")
    ap.add_argument("--dir", type=Path, help="parent of the scratch directory (default: the temp dir)")
    return ap.parse_args(argv)


def select_cases(args: argparse.Namespace) -> list[Case]:
    """The cases to build; ValueError naming the flag for an unknown case."""
    cases = all_cases()
    wanted = list(args.case or (QUICK_CASES if args.quick else ()))
    if not wanted:
        return cases
    known = {c.name: c for c in cases}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"--case: unknown case(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [known[n] for n in dict.fromkeys(wanted)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    samples = args.samples if args.samples is not None else (2 if args.quick else 3)
    if samples < 1:
        print("--samples: must be at least 1", file=sys.stderr)
        return 2
    try:
        cases = select_cases(args)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if not (args.source / "pybuildless" / "__main__.py").is_file():
        print(f"--source: {args.source} holds no pybuildless package", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or not shutil.which("dockerd") or not os.path.exists(DOCKER_CLIENT):
        print("vs_buildkit.py needs root, dockerd and /usr/bin/docker (Debian's docker.io)", file=sys.stderr)
        return 2
    out = sys.stderr if args.json == "-" else sys.stdout
    log = lambda line: print(line, file=out, flush=True)  # noqa: E731
    modes = list(dict.fromkeys(args.mode or MODES))
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="pybuildless-vs-buildkit-", dir=args.dir))
    server, stop_registry = start_registry(work / "registry")
    dockerd = None
    # dockerd's socket path must fit a sockaddr_un (108 bytes): a deep --dir gets a short one in /tmp.
    engine_dir = work / "dockerd"
    if len(str(engine_dir / "docker.sock")) > 100:
        engine_dir = Path(tempfile.mkdtemp(prefix="vsbk-dockerd-"))
    try:
        try:
            dockerd, engine = start_dockerd(engine_dir)
        except pytest.fail.Exception as e:  # the fixture helper reports a daemon that did not start so
            print(f"dockerd: {e}", file=sys.stderr)
            return 2
        pyb = Pybuildless(work / "pybuildless", args.source.resolve(), args.profile, tuple(args.pybuildless_arg))
        pyb.precompile()
        bases = {}
        for name in sorted({c.base for c in cases} | {"busybox"}):
            rootfs = BASE_MAKERS[name](work / "bases" / name / "rootfs")
            layout = write_oci_layout(rootfs, work / "bases" / name / "layout")
            bases[name] = push_layout(layout, server, f"bench/base-{name}:latest")
            shutil.rmtree(work / "bases" / name, ignore_errors=True)
        contexts = [(c, c.prepare(work / "ctx" / c.name, bases)) for c in cases]
        bench = Bench(work, server, bases, pyb, BuildKit(engine), samples, log)
        log(f"pybuildless from {args.source.resolve()}; load average at start: "
            f"{' '.join(f'{x:.2f}' for x in load_start)} ({os.cpu_count()} cpus)")
        report: dict = {"source": str(args.source.resolve()), "samples": samples, "load_average_start": load_start, "cpus": os.cpu_count(), "modes": {}}
        failed = 0
        for mode in modes:
            try:
                results = bench.run_mode(mode, contexts)
            except BuildFailed as e:  # a warm-up build: nothing of this mode can be measured
                print(f"mode {mode}: warm-up build failed: {e}", file=sys.stderr)
                return 1
            s = summary(mode, results)
            failed += s["failed"]
            report["modes"][mode] = {"summary": s, "cases": [vars(r) for r in results]}
        report["load_average_end"] = os.getloadavg()
        log("")
        for mode in modes:
            print_summary(report["modes"][mode]["summary"], log)
        log(f"load average at end: {' '.join(f'{x:.2f}' for x in report['load_average_end'])}")
        if args.json:
            text = json.dumps(report, indent=1)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
        return 1 if failed else 0
    finally:
        if dockerd is not None:
            stop_dockerd(dockerd, engine_dir)
        shutil.rmtree(engine_dir, ignore_errors=True)
        stop_registry()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
