"""The two builders of benchmarks/vs_buildkit.py, each timed around its own commands: pybuildless
(``build --layer-store``, its store under a directory of the benchmark) and BuildKit (``docker build``
with DOCKER_BUILDKIT=1, then ``docker push``, against the dockerd the benchmark started).

pybuildless is started as the executor image starts it (benchmarks/launch.py): ``python -I -S`` with
``sys.path`` set to the standard library, the measured tree and the directories of its runtime
dependencies, so no ``.pth`` hook of this machine's site-packages runs (they cost ~30 ms per build
here and do not exist in the image). Bytecode comes from a cache directory filled before timing
(``-X pycache_prefix``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from corpus import PYCACHE, pybuildless_env
from launch import isolated_argv
from tests.fixtures.dockerd import DOCKER_CLIENT, DockerEngine

# pybuildless's info line for a stage's base: "<how> N layer(s) of IMAGE in 0.12s"
_FROM_LINE = re.compile(r"(extracted|laid from the layer store) \d+ layer\(s\) of \S+ in ([0-9.]+)s")


class BuildFailed(RuntimeError):
    pass


def _run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BuildFailed(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                          f"{proc.stderr.decode(errors='replace').strip()[-1500:]}")
    return proc


def manifest_exists(ref: str) -> bool:
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status == 200
    except OSError:
        return False


# --- the two builders --------------------------------------------------------------------------

class Pybuildless:
    """``pybuildless build --layer-store`` with its store (XDG_CACHE_HOME) under ``home``."""

    def __init__(self, home: Path, source: Path, profile_dir: Path | None, extra: tuple[str, ...] = ()) -> None:
        self.home = home
        self.source = source
        self.profile_dir = profile_dir
        self.extra = extra
        # -I ignores PYTHON* variables: sys.path and the bytecode cache are given on the command line
        self.env = {**pybuildless_env(), "XDG_CACHE_HOME": str(home / "xdg-cache")}
        self.builds = 0

    def precompile(self) -> None:
        """Bytecode compiled once before timing, as an installed package has it."""
        _run([sys.executable, "-m", "compileall", "-q", str(self.source / "pybuildless")], env=self.env)

    def reset(self, mode: str) -> None:
        shutil.rmtree(self.home / "work", ignore_errors=True)
        (self.home / "work").mkdir(parents=True)
        if mode == "cold":
            shutil.rmtree(self.home / "xdg-cache", ignore_errors=True)

    def build(self, ctx: Path, base: str, dest: str) -> tuple[float, float, str]:
        """Seconds of the build with its push, of laying the base layers, and how they were laid
        (both from its log)."""
        name = ""
        profile = None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            self.builds += 1
            name = f"{self.builds:03d}-{dest.rpartition('/')[2].replace(':', '-')}"
            profile = self.profile_dir / f"{name}.prof"
        argv = isolated_argv(self.source, ["build", "-c", str(ctx), "-f", str(ctx / "Dockerfile"),
                                           "--build-arg", f"BASE={base}", "-d", dest, "--layer-store",
                                           "--work-dir", str(self.home / "work"), *self.extra],
                             profile=profile, pycache_prefix=PYCACHE)
        start = time.perf_counter()
        proc = _run(argv, env=self.env, cwd=self.source)
        seconds = time.perf_counter() - start
        if name:
            (self.profile_dir / f"{name}.log").write_bytes(proc.stderr)
        found = _FROM_LINE.findall(proc.stderr.decode(errors="replace"))
        return seconds, sum(float(s) for _, s in found), ",".join(sorted({how for how, _ in found}))


class BuildKit:
    """``DOCKER_BUILDKIT=1 docker build`` then ``docker push`` against the engine started here."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self.env = {**os.environ, **engine.env, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        return _run([DOCKER_CLIENT, *args], env=self.env)

    def reset(self, mode: str) -> None:
        images = self.docker("image", "ls", "-aq").stdout.decode().split()
        if mode == "cold" and images:
            self.docker("image", "rm", "-f", *sorted(set(images)))
        self.docker("builder", "prune", "-af")

    def remove(self, ref: str) -> None:
        self.docker("image", "rm", ref)

    def build(self, ctx: Path, base: str, dest: str) -> tuple[float, float]:
        """Seconds of ``docker build`` and of ``docker push``."""
        start = time.perf_counter()
        self.docker("build", "--network", "host", "-t", dest, "-f", str(ctx / "Dockerfile"),
                    "--build-arg", f"BASE={base}", str(ctx))
        built = time.perf_counter()
        self.docker("push", dest)
        return built - start, time.perf_counter() - built
