"""The rootless executor image under a real Docker engine, as a non-root user.

* ``--user 1000 --security-opt seccomp=unconfined --security-opt apparmor=unconfined`` and
  nothing else: the container's /proc has Docker's masked paths, so the build's user namespace
  cannot mount a fresh /proc; steps get the container's /proc read-only and no pid namespace
  (one warning), and a two-stage Dockerfile with RUN steps builds, pushes and runs.
* Docker's default seccomp profile: user namespaces are refused, and the executor stops at once
  naming the cause.
* Adding ``--security-opt systempaths=unconfined`` (an unmasked /proc): a private /proc and pid
  namespace per step again.

The image is built from this checkout by pybuildless itself, on the stand-in Python base of
``docker/make_local_bases.py`` with Debian's groupadd/useradd and the setuid
newuidmap/newgidmap and setcap added (what the rootless target installs with apt-get elsewhere).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from tests.buildkit import write_context
from tests.fixtures.dockerd import ROOT, build_executor_image

# The fixture builds the image first (several minutes on a busy machine).
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(2400)]

ACCOUNT_TOOLS = {"groupadd": "usr/sbin", "useradd": "usr/sbin", "newuidmap": "usr/bin", "newgidmap": "usr/bin",
                 "setcap": "usr/sbin", "install": "usr/bin", "stat": "usr/bin"}
ACCOUNT_FILES = ("etc/login.defs",)
UNCONFINED = ("--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined")
PROC_WARNING = "RUN steps get this container's /proc read-only"


def _bases_module():
    spec = importlib.util.spec_from_file_location("make_local_bases", ROOT / "docker" / "make_local_bases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _rootless_base_tar(work: Path, bases_dir: Path) -> Path:
    """The stand-in Python base (from ``bases_dir``) plus the account tools, as a tarball for ``docker import``."""
    bases = _bases_module()
    rootfs = work / "rootless-base"
    rootfs.mkdir()
    with tarfile.open(bases_dir / "python-base.tar") as tar:
        tar.extractall(rootfs, filter="fully_trusted")  # our own tarball: keep modes (/tmp is 1777)
    for tool, where in ACCOUNT_TOOLS.items():
        src = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if src is None:
            pytest.fail(f"{tool} is missing on this machine (packages passwd, uidmap, coreutils)")
        dest = rootfs / where / tool
        if not dest.exists():
            shutil.copy2(os.path.realpath(src), dest)  # copy2 keeps newuidmap's setuid bit
            bases._copy_libs(Path(os.path.realpath(src)), rootfs)
    for name in ACCOUNT_FILES:
        if os.path.exists("/" + name):
            shutil.copy2("/" + name, rootfs / name)
    out = work / "rootless-base.tar"
    bases.tar_rootfs(rootfs, out)
    shutil.rmtree(rootfs)
    return out


@pytest.fixture(scope="module")
def rootless_image(dockerd, registry, executor_sources, tmp_path_factory) -> str:
    """``Dockerfile.executor --target rootless``, built by pybuildless, pushed and pulled into dockerd."""
    work = tmp_path_factory.mktemp("rootless-image")
    base = registry.ref("local/python-rootless-base:3.11")
    dockerd.docker("import", str(_rootless_base_tar(work, executor_sources.bases_dir)), base)
    dockerd.docker("push", "-q", base)
    ref = registry.ref("pybuildless/executor:rootless")
    build_executor_image(executor_sources, "rootless", ref, {"BASE_IMAGE": base})
    dockerd.docker("pull", "-q", ref)
    shutil.rmtree(work, ignore_errors=True)
    return ref


def _readable_context(path: Path, dockerfile: str) -> Path:
    """A context uid 1000 in the container can read (pytest's temp dirs are root's, mode 0700)."""
    ctx = write_context(path, {"Dockerfile": dockerfile, "greeting.txt": "hello from the context\n"})
    for dirpath, _, filenames in os.walk(ctx):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o644)
    return ctx


TWO_STAGES = """\
FROM {base} AS build
WORKDIR /src
COPY greeting.txt .
RUN cat greeting.txt > message && echo "built by $(id -u) in stage one" >> message \\
 && mkdir -p /out && cp message /out/ && ls /proc/self/fd > /dev/null
RUN echo 'app:x:2000:2000::/home/app:/bin/sh' >> /etc/passwd && mkdir -p /out/owned && chown 2000:2000 /out/owned
FROM {base}
COPY --from=build /out /app
RUN test "$(stat -c %u:%g /app/owned)" = 2000:2000 && echo "second stage ran" >> /app/message
CMD ["cat", "/app/message"]
"""


def _run_rootless(dockerd, image: str, ctx: Path, destination: str, *options: str):
    return dockerd.docker("run", "--rm", "--network", "host", "--user", "1000", *options,
                          "-v", f"{ctx}:/workspace:ro", image,
                          "--context", "dir:///workspace", "--destination", destination, check=False, timeout=900)


def test_rootless_with_seccomp_and_apparmor_unconfined(dockerd, rootless_image, registry, busybox_image,
                                                       tmp_path) -> None:
    ctx = _readable_context(tmp_path / "ctx", TWO_STAGES.format(base=busybox_image))
    ref = registry.ref("rootless/two-stages:1")
    proc = _run_rootless(dockerd, rootless_image, ctx, ref, *UNCONFINED)
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, log
    assert log.count(PROC_WARNING) == 1, log
    assert "full id map" in log, log  # newuidmap from /etc/subuid: chown to 2000 worked
    dockerd.docker("pull", "-q", ref)
    out = dockerd.docker("run", "--rm", ref)
    assert out.stdout.decode() == "hello from the context\nbuilt by 0 in stage one\nsecond stage ran\n"


def test_rootless_with_default_seccomp_stops_at_once(dockerd, rootless_image, registry, busybox_image,
                                                     tmp_path) -> None:
    ctx = _readable_context(tmp_path / "ctx", TWO_STAGES.format(base=busybox_image))
    started = time.monotonic()
    proc = _run_rootless(dockerd, rootless_image, ctx, registry.ref("rootless/blocked:1"))
    elapsed = time.monotonic() - started
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0
    assert "user namespaces" in log and "seccomp" in log, log
    assert "Traceback" not in log, log
    assert elapsed < 60, elapsed  # before pulling or building anything


def test_rootless_with_systempaths_unconfined_gets_a_private_proc(dockerd, rootless_image, registry, busybox_image,
                                                                  tmp_path) -> None:
    """An unmasked /proc in the container: steps get their own pid namespace and a fresh /proc again."""
    ctx = _readable_context(tmp_path / "ctx", f"FROM {busybox_image}\n"
                                              "RUN cat /proc/1/comm > /pid1 && ls /proc | grep -c '^[0-9]' > /count\n"
                                              'CMD ["cat", "/pid1", "/count"]\n')
    ref = registry.ref("rootless/private-proc:1")
    proc = _run_rootless(dockerd, rootless_image, ctx, ref, *UNCONFINED, "--security-opt", "systempaths=unconfined")
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, log
    assert PROC_WARNING not in log, log
    dockerd.docker("pull", "-q", ref)
    pid1, count = dockerd.docker("run", "--rm", ref).stdout.decode().split()
    # pid 1 is the step's minimal init; only init, the shell, ls and grep exist in there
    assert pid1 == "init" and int(count) <= 5, (pid1, count)
