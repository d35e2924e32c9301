#!/usr/bin/env python3
"""The fixed cost of a build: start-up of HEAD against an older commit, in one run.

Each source tree is a ``git archive`` copy (byte-compiled before timing, so no sample pays for
compiling), run with ``PYTHONPATH`` pointing at it. Measured, alternating between the two trees
in every round so both see the same machine load:

  python     ``python -c pass``: the interpreter's own start-up, the floor
  import     ``python -c "import pybuildless.builder.executor, pybuildless.cli.build"``
  help       ``python -m pybuildless build --help`` (Kaniko's ``executor --help``)
  build      ``python -m pybuildless build --no-push`` of a metadata-only Dockerfile (FROM scratch,
             ARG, ENV, LABEL, EXPOSE, USER, CMD): no RUN, no registry, no layer
  registry   (with ``--registry``) the same instructions on a busybox base pulled from a loopback
             docker-registry, the image pushed there (the base comes from the layer store after
             the first build)

Each case runs twice over with ``--launch both`` (the default): as ``python -m pybuildless`` with
``PYTHONPATH`` (``site`` runs, with every ``.pth`` hook of this machine's site-packages: on a
development machine those import certifi, coverage's start-up hook and an editable install's
finder), and, suffixed ``-IS``, as the executor image starts it (benchmarks/launch.py): ``python
-I -B -S`` with ``sys.path`` set to the standard library, the tree and the directories of its
runtime dependencies, no ``.pth`` processing, as ``/kaniko/executor`` does
(docker/assemble_runtime.py). ``python-IS`` is then the interpreter's floor in the image.

For each: the median wall time and CPU time (user+sys of the child) over the samples, the
spread (interquartile range) and the number of modules loaded; the load average is printed
before and after. Wall time on a shared machine is noisy: compare the CPU column and the two
trees' ratio, which share the same rounds. ``--callgrind`` adds, per case and tree, the machine
instructions the process executed (one run under ``valgrind --tool=callgrind``; its children, such
as a RUN's sandbox, are not counted): a figure the machine's load does not move.

    benchmarks/startup.py --base COMMIT [--head COMMIT] [--samples 15] [--registry] [--launch isolated]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launch import bootstrap, isolated_argv

ROOT = Path(__file__).resolve().parent.parent

METADATA_DOCKERFILE = """\
ARG BASE=scratch
FROM ${BASE}
ARG VERSION=1.0
ENV APP_HOME=/srv/app VERSION=${VERSION}
LABEL org.opencontainers.image.title=startup org.opencontainers.image.version=${VERSION}
EXPOSE 8080
USER 1000
CMD ["/srv/app/run"]
"""

COUNT_MODULES = "import atexit, sys; atexit.register(lambda: sys.stderr.write(f'\\nMODULES {len(sys.modules)}\\n'))"


def archive(commit: str, dest: Path) -> Path:
    """``git archive COMMIT`` unpacked into ``dest``, byte-compiled."""
    dest.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "pybuildless")], check=True)
    return dest


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, modules loaded) of one run; fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    modules = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MODULES ")]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, modules[-1] if modules else 0


def cases(context: Path, registry: str | None, launch: str, tree: Path) -> dict[str, list[str]]:
    """The command line of each case for one tree: ``site`` ones run with ``PYTHONPATH`` set to the
    tree, ``-IS`` ones (benchmarks/launch.py) name the tree in their own ``sys.path``."""
    build = ["build", "-c", str(context), "-f", str(context / "Dockerfile")]
    commands = {"help": ["build", "--help"], "build": [*build, "--no-push"]}
    if registry:
        commands["registry"] = [*build, "--build-arg", f"BASE={registry}/busybox:latest",
                                "-d", f"{registry}/startup:latest"]
    imports = "import pybuildless.builder.executor, pybuildless.cli.build"
    out: dict[str, list[str]] = {}
    if launch in ("site", "both"):
        py = [sys.executable, "-c"]
        run_module = f"{COUNT_MODULES}\nimport runpy; runpy.run_module('pybuildless', run_name='__main__')"
        out["python"] = py + [COUNT_MODULES]
        out["import"] = py + [f"{COUNT_MODULES}\n{imports}"]
        out.update({name: py + [run_module, *args] for name, args in commands.items()})
    if launch in ("isolated", "both"):
        py = [sys.executable, "-I", "-B", "-S", "-c"]
        out["python-IS"] = py + [COUNT_MODULES]
        out["import-IS"] = py + [bootstrap(tree, imports, prelude=COUNT_MODULES)]
        out.update({f"{name}-IS": isolated_argv(tree, args, prelude=COUNT_MODULES)
                    for name, args in commands.items()})
    return out


def instructions_executed(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Machine instructions the process itself executed (``valgrind --tool=callgrind``, children not
    followed): unlike times, the same on an idle and on a loaded machine."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--trace-children=no",
                           *argv], env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"callgrind of {' '.join(argv[:6])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def start_registry(work: Path) -> tuple[str, object]:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout
    from tests.fixtures.registry import start_registry as start

    server, stop = start(work / "registry")
    layout = write_oci_layout(make_busybox_rootfs(work / "busybox-rootfs"), work / "busybox-layout")
    push_layout(layout, server, "busybox:latest")
    return server.host, stop


def summary(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range)."""
    if len(values) < 4:
        return statistics.median(values), max(values) - min(values)
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[2] - q[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the older commit to compare with")
    ap.add_argument("--head", default="HEAD", help="the newer commit (default HEAD)")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--registry", action="store_true", help="also a build on a base from a loopback registry")
    ap.add_argument("--only", action="append", help="only these cases (repeatable)")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count the instructions each case executes once per tree (valgrind; slow)")
    ap.add_argument("--launch", choices=("site", "isolated", "both"), default="both",
                    help="python -m pybuildless with site, as the executor image does (-I -S), or both")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pybuildless-startup-"))
    stop = None
    try:
        trees = {label: archive(commit, work / label) for label, commit in (("base", args.base), ("head", args.head))}
        context = work / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(METADATA_DOCKERFILE)
        registry = None
        if args.registry:
            registry, stop = start_registry(work)
        runs = {label: cases(context, registry, args.launch, tree) for label, tree in trees.items()}
        names = [n for n in runs["head"] if not args.only or n in args.only]
        envs = {label: {**os.environ, "PYTHONPATH": str(tree), "XDG_CACHE_HOME": str(work / f"xdg-{label}"),
                        "PYTHONDONTWRITEBYTECODE": "1"} for label, tree in trees.items()}
        for env in envs.values():
            env.pop("PYBUILDLESS_ISOLATION", None)
        results = {(n, label): [] for n in names for label in trees}
        for label in trees:  # one unmeasured round each: the layer store and the page cache warm up
            for n in names:
                timed(runs[label][n], envs[label], work)
        load_before = os.getloadavg()
        for round_ in range(args.samples):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for n in names:
                for label in order:
                    results[(n, label)].append(timed(runs[label][n], envs[label], work))
        load_after = os.getloadavg()

        print(f"base {args.base} vs head {args.head}; {args.samples} samples each, alternating; "
              f"python {sys.version.split()[0]}; {os.cpu_count()} cores")
        print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
              f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(f"{'case':12s} {'tree':5s} {'wall ms':>8s} {'±IQR':>7s} {'CPU ms':>8s} {'±IQR':>7s} {'modules':>8s}")
        for n in names:
            medians = {}
            for label in trees:
                samples = results[(n, label)]
                wall, wall_iqr = summary([s[0] * 1e3 for s in samples])
                cpu, cpu_iqr = summary([s[1] * 1e3 for s in samples])
                medians[label] = (wall, cpu)
                print(f"{n:12s} {label:5s} {wall:8.1f} {wall_iqr:7.1f} {cpu:8.1f} {cpu_iqr:7.1f} "
                      f"{samples[-1][2]:8d}")
            (bw, bc), (hw, hc) = medians["base"], medians["head"]
            print(f"{'':12s} head/base: wall {hw / bw:.2f}, CPU {hc / bc:.2f}")
        counted = {}
        if args.callgrind:
            print(f"{'case':12s} {'base Mi':>9s} {'head Mi':>9s} {'head/base':>9s}  (instructions executed, "
                  "valgrind --tool=callgrind, the pybuildless process alone)")
            for n in names:
                counted[n] = {label: instructions_executed(runs[label][n], envs[label], work) for label in trees}
                base_n, head_n = counted[n]["base"], counted[n]["head"]
                print(f"{n:12s} {base_n / 1e6:9.1f} {head_n / 1e6:9.1f} {head_n / base_n:9.3f}")
        print(json.dumps({"base": args.base, "head": args.head, "samples": args.samples, "instructions": counted,
                          "load": [load_before, load_after],
                          "median_ms": {f"{n}/{label}": [round(statistics.median(s[i] for s in results[(n, label)]) * 1e3, 1)
                                                         for i in (0, 1)] for n in names for label in trees}}))
    finally:
        if stop is not None:
            stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
