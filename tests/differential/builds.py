"""Building the differential cases: pybuildless, BuildKit and buildah, each case's context copied
privately per builder, each image pushed to the session registry and unpacked (skopeo + umoci).

Builds run several at a time in a thread pool (each build is a separate process or a daemon request,
and every build has its own context copy, tag and scratch dirs), each at most once per session: the
pybuildless image of a case is built once and compared with both references.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

from tests.buildkit import ROOT, unpack
from tests.differential import Buildah, Case, copy_case
from tests.differential.compare import ImageView
from tests.fixtures.dockerd import DOCKER_CLIENT

# Builds at once: each build alternates between CPU (compression, unpacking) and waiting on a process,
# the registry or the daemon, so three keep two cores busy.
DEFAULT_JOBS = int(os.environ.get("PYBUILDLESS_DIFFERENTIAL_JOBS", "3"))


# The environment builds run with, taken once in the main thread: pytest rewrites os.environ
# (PYTEST_CURRENT_TEST) while tests run, and copying it from a build thread at that moment fails.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


class BuildFailed(AssertionError):
    """A builder failed on a case; the message carries its output."""


def _run(what: str, argv: list[str], cwd: Path, env: dict[str, str], check: bool = True,
         timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env={**_ENV, **env}, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise BuildFailed(f"{what} failed ({proc.returncode}): {' '.join(argv)}\n"
                          f"STDOUT:\n{proc.stdout.decode(errors='replace')[-4000:]}\n"
                          f"STDERR:\n{proc.stderr.decode(errors='replace')[-4000:]}")
    return proc


def image_ref(registry, case: Case, builder: str) -> str:
    return registry.ref(f"differential/{case.name.replace('_', '-')}:{builder}")


_MANIFEST_TYPES = ", ".join(("application/vnd.oci.image.manifest.v1+json",
                             "application/vnd.docker.distribution.manifest.v2+json"))


def raw_config(ref: str) -> dict:
    """The config blob of ``ref`` (HOST:PORT/REPO:TAG on an anonymous loopback registry), as pushed."""
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")

    def get(path: str, accept: str = "*/*") -> bytes:
        req = urllib.request.Request(f"http://{host}/v2/{repo}/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()

    manifest = json.loads(get(f"manifests/{tag}", _MANIFEST_TYPES))
    return json.loads(get(f"blobs/{manifest['config']['digest']}"))


def _view_and_clean(ref: str, work: Path) -> ImageView:
    """The unpacked image, with the config blob as pushed: skopeo converts a Docker config to an OCI one
    on the way to the layout, dropping Healthcheck, Shell, OnBuild and ArgsEscaped."""
    try:
        unpacked = unpack(f"docker://{ref}", work / "unpacked")
        return ImageView.of(replace(unpacked, config=raw_config(ref)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_with_pybuildless(case: Case, registry, base: str, work: Path) -> ImageView:
    """The executor as a user runs it (what ``tests.buildkit.executor`` runs), from this checkout."""
    ref = image_ref(registry, case, "pybuildless")
    ctx = copy_case(case.name, work / "ctx", base)
    _run("pybuildless", [sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
                         "--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
                         "--build-arg", f"BASE={base}"],
         cwd=work, env={"PYTHONPATH": str(ROOT)})
    return _view_and_clean(ref, work)


def build_with_buildkit(case: Case, engine, registry, base: str, work: Path) -> ImageView:
    """``DOCKER_BUILDKIT=1 docker build`` on the engine fixture, then ``docker push`` (the engine treats
    the loopback registry as insecure by itself)."""
    ref = image_ref(registry, case, "buildkit")
    ctx = copy_case(case.name, work / "ctx", base)
    # What ``engine.buildkit_build`` and ``engine.docker`` run, with the environment snapshot.
    docker_env = {**engine.env, "DOCKER_BUILDKIT": "1"}
    _run("BuildKit", [DOCKER_CLIENT, "build", "--network", "host", "-t", ref,
                      "-f", str(ctx / case.reference_dockerfile), "--build-arg", f"BASE={base}", str(ctx)],
         cwd=work, env=docker_env)
    _run("docker push", [DOCKER_CLIENT, "push", ref], cwd=work, env=docker_env)
    _run("docker rmi", [DOCKER_CLIENT, "rmi", ref], cwd=work, env=docker_env, check=False)  # keep the store small
    return _view_and_clean(ref, work)


def build_with_buildah(case: Case, buildah: Buildah, registry, base: str, work: Path) -> ImageView:
    ref = image_ref(registry, case, "buildah")
    ctx = copy_case(case.name, work / "ctx", base)
    buildah.build_and_push(ctx, ref, {"BASE": base}, dockerfile=case.reference_dockerfile)
    return _view_and_clean(ref, work)


class Builds:
    """Futures of builds keyed by (builder, case), each submitted once."""

    def __init__(self, jobs: int = DEFAULT_JOBS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="differential")
        self._futures: dict[tuple[str, str], Future] = {}
        self._lock = threading.Lock()

    def submit(self, builder: str, case: Case, build: Callable[[], ImageView]) -> Future:
        with self._lock:
            key = (builder, case.name)
            if key not in self._futures:
                self._futures[key] = self._pool.submit(build)
            return self._futures[key]

    def result(self, builder: str, case: Case, timeout: float = 900) -> ImageView:
        return self._futures[(builder, case.name)].result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_shared: Builds | None = None
_shared_lock = threading.Lock()


def shared_builds() -> Builds:
    """One pool per session for every differential test module (so pybuildless builds are shared)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Builds()
        return _shared


def submit_pybuildless(builds: Builds, case: Case, registry, base: str, work_root: Path) -> Future:
    return builds.submit("pybuildless", case,
                         lambda: build_with_pybuildless(case, registry, base, work_root / f"{case.name}-pybuildless"))


def selected_cases(request, all_cases: list[Case], module_suffix: str) -> list[Case]:
    """The cases of ``all_cases`` that the session will run from the module ending in ``module_suffix``
    (all of them, unless ``-k`` or node ids narrowed the run), in collection order."""
    wanted = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "case" in callspec.params and item.nodeid.split("::")[0].endswith(module_suffix):
            wanted.add(callspec.params["case"].name)
    return [case for case in all_cases if case.name in wanted]
