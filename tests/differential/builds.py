"""Building the differential cases: pybuildless, BuildKit and buildah, each case's context copied
privately per builder, each image pushed to the session registry and unpacked (skopeo + umoci).

Builds run several at a time in a child process started with the session (``Builds``; each build is a
separate process or a daemon request, and every build has its own context copy, tag and scratch dirs),
each at most once per session: the pybuildless image of a case is built once and compared with both
references.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import traceback
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

from tests.buildkit import ROOT, unpack
from tests.differential import Buildah, Case, copy_case, load_case
from tests.differential.compare import BUILDKIT, ImageView
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
    """Builds run by a child process (``python -m tests.differential.builds SPEC``), started when the
    session starts so that they use the time the other tests leave a core idle. It runs at a lower CPU
    priority until a test needs one of its images, then at the normal one. Being a process of its own,
    it adds no thread and no file descriptor to the test process (some tests count those). Each finished
    build is a pickled ``ImageView`` (or the error) in ``out`` and one line ``BUILDER CASE`` on its stdout."""

    def __init__(self, jobs: list[dict], out: Path, xdg: Path, parallel: int = DEFAULT_JOBS, nice: int = 10) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self._out = out
        spec = out / "spec.json"
        spec.write_text(json.dumps({"jobs": jobs, "parallel": parallel, "nice": nice, "out": str(out)}))
        self._log = out / "builds.log"
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "tests.differential.builds", str(spec)], cwd=ROOT,
                                          env={**_ENV, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(xdg)}, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self._done: set[str] = set()
        self._hurried = False

    def result(self, builder: str, case: Case) -> ImageView:
        key = f"{builder} {case.name}"
        if key not in self._done and not self._hurried:
            self._hurried = True  # a test waits: the builds (the process group) get the normal priority
            try:
                os.setpriority(os.PRIO_PGRP, self._proc.pid, 0)
            except OSError:
                pass
        while key not in self._done:
            line = self._proc.stdout.readline()
            if not line:
                raise BuildFailed(f"the build process ended ({self._proc.wait()}) without building {key}:\n"
                                  f"{self._log.read_text(errors='replace')[-4000:]}")
            self._done.add(line.decode().strip())
        kind, value = pickle.loads((self._out / _result_name(builder, case.name)).read_bytes())
        if kind != "image":
            raise BuildFailed(value)
        return value

    def close(self) -> None:
        """Stops what is still queued (a session that ended early) and waits for the running builds."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc.stdout.close()


def _result_name(builder: str, case: str) -> str:
    return f"{builder}--{case}.pickle"


def job(builder: str, case: Case, work: Path, registry, base: str, engine=None, buildah: Buildah | None = None) -> dict:
    """One build for ``Builds``: what the child process needs to run it (no live objects)."""
    return {"builder": builder, "case": case.name, "work": str(work / f"{case.name}-{builder}"), "base": base,
            "registry": registry.host, "engine_env": dict(engine.env) if engine is not None else None,
            "buildah": [str(buildah.home), buildah.registry_host] if buildah is not None else None}


class _Registry:
    def __init__(self, host: str) -> None:
        self.host = host

    def ref(self, path: str) -> str:
        return f"{self.host}/{path.lstrip('/')}"


class _Engine:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env


def _run_job(spec: dict) -> ImageView:
    case, registry, work = load_case(spec["case"]), _Registry(spec["registry"]), Path(spec["work"])
    if spec["builder"] == "pybuildless":
        return build_with_pybuildless(case, registry, spec["base"], work)
    if spec["builder"] == BUILDKIT:
        return build_with_buildkit(case, _Engine(spec["engine_env"]), registry, spec["base"], work)
    home, host = spec["buildah"]
    return build_with_buildah(case, Buildah(Path(home), host), registry, spec["base"], work)


def main(argv: list[str]) -> int:
    """The child process of ``Builds``: every job of the spec, ``parallel`` at a time, in order."""
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["out"])
    os.nice(spec["nice"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pool = ThreadPoolExecutor(max_workers=spec["parallel"], thread_name_prefix="differential")
    futures = {pool.submit(_run_job, j): j for j in spec["jobs"]}
    pending = set(futures)
    while pending and not stop.is_set():
        finished, pending = wait(pending, timeout=1, return_when=FIRST_COMPLETED)
        for future in finished:
            j = futures[future]
            try:
                value = ("image", future.result())
            except BaseException as e:  # the test of the case fails with it
                value = ("error", "".join(traceback.format_exception(e))[-8000:])
            name = out / _result_name(j["builder"], j["case"])
            tmp = name.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(value))
            os.replace(tmp, name)
            print(j["builder"], j["case"], flush=True)
    pool.shutdown(wait=True, cancel_futures=True)
    return 0


def selected_cases(session, all_cases: list[Case], module_suffix: str) -> list[Case]:
    """The cases of ``all_cases`` that the session will run from the module ending in ``module_suffix``
    (all of them, unless ``-k`` or node ids narrowed the run), in collection order."""
    wanted = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "case" in callspec.params and item.nodeid.split("::")[0].endswith(module_suffix):
            wanted.add(callspec.params["case"].name)
    return [case for case in all_cases if case.name in wanted]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
