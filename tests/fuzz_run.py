"""Random differential runs against BuildKit, outside pytest:

    python3 -m tests.fuzz_run --seeds 0:300 --out /tmp/fuzz

Starts a loopback registry, Debian's dockerd (``tests/fixtures/dockerd.py``) and the busybox base
image, then for each seed builds the ``tests/fuzz_dockerfiles.py`` case three times, one build at a
time: pybuildless with its layer store (the default; one store for the whole run, in ``OUT/xdg``,
as a user's cache would be), pybuildless with ``--no-layer-store``, and BuildKit
(``DOCKER_BUILDKIT=1 docker build`` then ``docker save``). Each pybuildless image is compared with
BuildKit's layer by layer (``tests/fuzz_layers.py``). One JSON line per seed goes to
``OUT/results.jsonl``; a seed with differences or a failed build keeps its Dockerfiles, context
and report in ``OUT/seed-N``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.dockerd import DOCKER_CLIENT, DockerEngine, remove_in_background, start_dockerd, stop_dockerd
from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout
from tests.fixtures.registry import start_registry
from tests.fuzz_dockerfiles import FuzzCase, generate, write_case
from tests.fuzz_layers import image_differences, read_docker_archive, read_oci_layout

ROOT = Path(__file__).resolve().parent.parent
# The environment builds run with, taken once at import: the tests run cases on threads while pytest
# rewrites os.environ (PYTEST_CURRENT_TEST), and copying it from a thread at that moment fails.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


class BuildError(Exception):
    pass


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> None:
    proc = subprocess.run(argv, env={**_ENV, **env}, cwd=cwd, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(argv[:3])}... failed ({proc.returncode}):\n"
                         f"{proc.stdout.decode(errors='replace')[-3000:]}\n{proc.stderr.decode(errors='replace')[-3000:]}")


def build_pybuildless(ctx: Path, dockerfile: Path, base: str, out: Path, xdg: Path, *flags: str):
    _run([sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
          "--context", str(ctx), "--dockerfile", str(dockerfile), "--no-push", "--oci-layout-path", str(out),
          "--build-arg", f"BASE={base}", *flags],
         env={"PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(xdg), "PYBUILDLESS_CLEANUP": "wait"}, cwd=out.parent)
    return read_oci_layout(out)


def build_buildkit(engine: DockerEngine, ctx: Path, dockerfile: Path, base: str, out: Path, tag: str):
    env = {**engine.env, "DOCKER_BUILDKIT": "1"}
    _run([DOCKER_CLIENT, "build", "--network", "host", "-t", tag, "-f", str(dockerfile),
          "--build-arg", f"BASE={base}", str(ctx)], env=env, cwd=out.parent)
    try:
        _run([DOCKER_CLIENT, "save", "-o", str(out), tag], env=env, cwd=out.parent)
    finally:
        subprocess.run([DOCKER_CLIENT, "rmi", tag], env={**_ENV, **env}, capture_output=True)
    return read_docker_archive(out)


@dataclass(frozen=True)
class Outcome:
    seed: int
    status: str  # same | differ | build-failed | all-failed | base-failed
    report: str
    seconds: float


def build_base(case: FuzzCase, engine: DockerEngine, registry, base: str, ctx: Path, work: Path) -> str:
    """The case's base image, built by ``case.base_builder`` from ``base`` and pushed; its reference."""
    ref = registry.ref(f"fuzzbase/seed-{case.seed}:{case.base_builder}")
    (work / "base").mkdir()
    dockerfile = work / "base" / "Dockerfile"
    dockerfile.write_text(case.base_dockerfile)
    if case.base_builder == "buildkit":
        env = {**engine.env, "DOCKER_BUILDKIT": "1"}
        _run([DOCKER_CLIENT, "build", "--network", "host", "-t", ref, "-f", str(dockerfile),
              "--build-arg", f"BASE={base}", str(ctx)], env=env, cwd=work)
        _run([DOCKER_CLIENT, "push", ref], env=env, cwd=work)
        subprocess.run([DOCKER_CLIENT, "rmi", ref], env={**_ENV, **env}, capture_output=True)
    else:
        _run([sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
              "--context", str(ctx), "--dockerfile", str(dockerfile), "--destination", ref,
              "--build-arg", f"BASE={base}"],
             env={"PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(work / "base" / "xdg"),
                  "PYBUILDLESS_CLEANUP": "wait"}, cwd=work)
    shutil.rmtree(work / "base" / "xdg", ignore_errors=True)
    return ref


def check_case(case: FuzzCase, engine: DockerEngine, base: str, work: Path, xdg: Path, registry=None) -> Outcome:
    """Build ``case`` with the three builders and compare; ``work`` is removed unless something differs."""
    start = time.monotonic()
    ctx, dockerfile, reference = write_case(case, work)
    report: list[str] = []
    images = {}
    if case.base_dockerfile:
        try:
            base = build_base(case, engine, registry, base, ctx, work)
        except BuildError as e:
            shutil.rmtree(work / "base", ignore_errors=True)
            (work / "report.txt").write_text(f"== base build ({case.base_builder}) failed\n{e}\n")
            return Outcome(case.seed, "base-failed", str(e), time.monotonic() - start)
    for name, build in (
            ("buildkit", lambda: build_buildkit(engine, ctx, reference, base, work / "buildkit.tar",
                                                f"fuzz/seed-{case.seed}:latest")),
            ("store", lambda: build_pybuildless(ctx, dockerfile, base, work / "store", xdg)),
            ("no-store", lambda: build_pybuildless(ctx, dockerfile, base, work / "no-store", xdg,
                                                   "--no-layer-store"))):
        try:
            images[name] = build()
        except BuildError as e:
            report.append(f"== {name} build failed\n{e}")
    if "buildkit" in images:
        for ours in ("store", "no-store"):
            if ours in images:
                lines = image_differences(images[ours], images["buildkit"], a=f"pybuildless ({ours})")
                if lines:
                    report.append(f"== pybuildless ({ours}) vs BuildKit\n" + "\n".join(lines))
    elif "store" in images and "no-store" in images:
        lines = image_differences(images["store"], images["no-store"], a="store", b="no-store")
        if lines:
            report.append("== store vs no-store\n" + "\n".join(lines))
    # all three failing is agreement (a case the generator should not make; the report says why)
    status = "all-failed" if not images else "build-failed" if len(images) < 3 else "differ" if report else "same"
    for out in ("store", "no-store", "buildkit.tar"):
        path = work / out
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    text = "\n".join(report)
    if status == "same":
        shutil.rmtree(work, ignore_errors=True)
    else:
        (work / "report.txt").write_text(text + "\n")
    return Outcome(case.seed, status, text, time.monotonic() - start)


class Session:
    """Registry, engine and base image for a run (stopped by ``close``)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.registry, self._stop_registry = start_registry(scratch / "registry")
        self.dockerd, self.engine = start_dockerd(scratch / "dockerd")
        rootfs = make_busybox_rootfs(scratch / "busybox" / "rootfs")
        layout = write_oci_layout(rootfs, scratch / "busybox" / "layout")
        self.base = push_layout(layout, self.registry, "base/busybox:latest")

    def prune(self) -> None:
        subprocess.run([DOCKER_CLIENT, "builder", "prune", "-af"], env={**_ENV, **self.engine.env},
                       capture_output=True)

    def close(self) -> None:
        stop_dockerd(self.dockerd, self.scratch / "dockerd")
        self._stop_registry()
        remove_in_background(self.scratch / "dockerd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0:50", help="START:END (END excluded) or a comma list")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if ":" in args.seeds:
        a, b = args.seeds.split(":")
        seeds = list(range(int(a), int(b)))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-session-"))
    session = Session(scratch)
    counts: dict[str, int] = {}
    try:
        with open(args.out / "results.jsonl", "a") as results:
            for i, seed in enumerate(seeds):
                work = args.out / f"seed-{seed}"
                shutil.rmtree(work, ignore_errors=True)
                outcome = check_case(generate(seed), session.engine, session.base, work, args.out / "xdg",
                                     session.registry)
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                results.write(json.dumps({"seed": seed, "status": outcome.status,
                                          "seconds": round(outcome.seconds, 1)}) + "\n")
                results.flush()
                print(f"seed {seed}: {outcome.status} ({outcome.seconds:.1f} s)", flush=True)
                if i % 20 == 19:
                    session.prune()
    finally:
        session.close()
        shutil.rmtree(scratch / "registry", ignore_errors=True)
    print(json.dumps(counts))
    return 1 if set(counts) - {"same", "all-failed"} else 0


if __name__ == "__main__":
    sys.exit(main())
