"""The multi-platform examples, run by the same clients as the other examples.

examples/gitlab-ci/multi-platform.gitlab-ci.yml by gitlab-ci-local (docker executor, the ``:debug``
executor image on the Docker engine fixture) and examples/kubernetes/multi-platform-pod.yaml by
``podman kube play`` (adapted for podman 4.3 exactly as tests/test_examples_kubernetes.py adapts
pod.yaml), each building examples/multi-platform/ for linux/amd64 and linux/arm64 and pushing to
the loopback basic-auth registry. Each build is then checked from outside: ``skopeo inspect --raw``
shows the index (its digest is what the job's digest file says), ``skopeo --override-arch`` each
image, and each image is pulled by digest and run by the same engine, arm64 under the kernel's
qemu-user-static handler. The only change to the example files: the Dockerfile's ``ARG BASE``
default names the loopback amd64+arm64 busybox (there is no internet here).

The executor runs in place in an unprivileged container: the platforms take turns on its root, and
binfmt_misc is not mounted in a container's /proc, so the build asks the kernel by running a tiny
arm64 program (``builder.binfmt.kernel_runs``) — checked against qemu itself below.

Expected output: ``uname -m`` names as the kernel reports them (x86_64 for amd64, aarch64 for
arm64), platforms as BuildKit spells TARGETPLATFORM/BUILDPLATFORM (``os/arch``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pybuildless.builder import binfmt
from pybuildless.image.descriptor import Platform
from tests.fixtures.dockerd import DockerEngine, ExecutorImages
from tests.fixtures.foreign import arm64_layout, arm64_rootfs, multiarch_image  # noqa: F401  (fixtures)
from tests.fixtures.podman import Podman, signature_policy
from tests.fixtures.podman import podman as private_podman  # noqa: F401  (fixture)
from tests.test_examples_gitlab import _helper_image, _run_job
from tests.test_examples_kubernetes import (
    _adapt_for_podman_43, _context_volume, _load_executor, _play, _podman_secret, _podman_version, _wait,
    _with_registry,
)
from tests.test_examples_kubernetes import podman, work  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # the executor images are built once per session
    pytest.mark.skipif(os.geteuid() != 0, reason="dockerd and podman's rootful mode need root"),
]

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ROOT / "examples" / "multi-platform"
CI = ROOT / "examples" / "gitlab-ci" / "multi-platform.gitlab-ci.yml"
POD = ROOT / "examples" / "kubernetes" / "multi-platform-pod.yaml"
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}  # what uname -m says on each
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _require_arm64_handler() -> None:
    assert binfmt.emulator_for(Platform.parse("linux/arm64")) is not None, (
        "no binfmt_misc handler for arm64 with the F flag: run `make deps` (qemu-user-static)")


def example_context(base: str) -> dict[str, str]:
    """examples/multi-platform with the loopback multi-platform busybox as ``ARG BASE``'s default."""
    files = {p.name: p.read_text() for p in sorted(CONTEXT.iterdir()) if p.is_file()}
    lines = files["Dockerfile"].splitlines(keepends=True)
    defaults = [n for n, line in enumerate(lines) if line.startswith("ARG BASE=")]
    assert len(defaults) == 1, "the example's Dockerfile has one `ARG BASE=` line"
    lines[defaults[0]] = f"ARG BASE={base}\n"
    files["Dockerfile"] = "".join(lines)
    return files


def expected_output(arch: str) -> str:
    host = os.uname().machine
    return (f"built for linux/{arch} on {Platform.host()}\ncross-built on {host} for {arch}\n"
            f"RUN step on {MACHINE[arch]}\nrunning on {MACHINE[arch]}\n")


def assert_stages_built_as_documented(log: str) -> None:
    """In place the platforms take turns (amd64 first): `sources` is built once, for amd64, and
    reused for arm64; `build` (it declares TARGETARCH) and the last stage's RUN run per platform."""
    assert log.count("stage sources: same inputs as for linux/amd64, built once") == 1, log[-6000:]
    assert log.count("RUN sed \"s|@BUILDPLATFORM@|") == 1, log[-6000:]
    assert log.count("RUN sed \"s|@TARGETPLATFORM@|") == 2, log[-6000:]
    assert log.count("RUN echo \"RUN step on $(uname -m)\"") == 2, log[-6000:]


def check_index(ref: str, registry) -> tuple[str, dict[str, str]]:
    """The index under ``ref`` (its digest) and each platform's manifest digest, as skopeo reads them."""
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", registry.creds,
                          f"docker://{ref}"], check=True, capture_output=True, timeout=60).stdout
    index = json.loads(raw)
    index_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert index["mediaType"] == OCI_INDEX, index  # the base's images are OCI manifests
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        ("linux", "amd64"), ("linux", "arm64")]
    digests = {}
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        info = json.loads(subprocess.run(
            ["skopeo", "--override-arch", arch, "inspect", "--tls-verify=false", "--creds", registry.creds,
             f"docker://{ref}"], check=True, capture_output=True, timeout=60).stdout)
        # (skopeo's Digest is the reference's own manifest: the index)
        assert (info["Architecture"], info["Os"], info["Digest"]) == (arch, "linux", index_digest)
        digests[arch] = entry["digest"]
    return index_digest, digests


# -- GitLab CI: gitlab-ci-local, docker executor ---------------------------------------------------


@pytest.fixture
def ci_project(dockerd: DockerEngine, executor_images: ExecutorImages, multiarch_image, tmp_path) -> dict:  # noqa: F811
    ci = yaml.safe_load(CI.read_text())
    dockerd.docker("tag", executor_images.ref("debug"), ci["build-multi-platform"]["image"]["name"])
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(CI, project / ".gitlab-ci.yml")
    for name, text in example_context(multiarch_image).items():
        (project / name).write_text(text)
    git = ["git", "-C", str(project), "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "app"],
                 ["remote", "add", "origin", "https://gitlab.example.com/group/app.git"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    short_sha = subprocess.run([*git, "rev-parse", "--short=8", "HEAD"], check=True, capture_output=True,
                               text=True).stdout.strip()
    return {"dir": project, "helper": _helper_image(dockerd, tmp_path), "short_sha": short_sha}


def test_gitlab_job_pushes_an_index_whose_images_run(dockerd, ci_project, registry_basic) -> None:
    _require_arm64_handler()
    proc = _run_job(dockerd, ci_project, registry_basic, "build-multi-platform")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert_stages_built_as_documented(log)
    ref = f"{registry_basic.host}/group/app:{ci_project['short_sha']}"
    index_digest, digests = check_index(ref, registry_basic)
    assert (ci_project["dir"] / "image-digest").read_text().strip() == index_digest  # the job's artifact
    dockerd.docker("login", "-u", registry_basic.username, "--password-stdin", registry_basic.host,
                   input=registry_basic.password.encode())
    for arch, digest in digests.items():
        by_digest = f"{registry_basic.host}/group/app@{digest}"
        dockerd.docker("pull", "-q", by_digest)
        inspected = dockerd.docker("image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", by_digest)
        assert inspected.stdout.decode().strip() == f"linux/{arch}"
        out = dockerd.docker("run", "--rm", "--network", "none", by_digest).stdout.decode()
        assert out == expected_output(arch)


# -- Kubernetes: podman kube play ------------------------------------------------------------------


def test_kubernetes_pod_pushes_an_index_whose_images_run(podman: Podman, executor_images, registry_basic,  # noqa: F811
                                                         multiarch_image, work) -> None:  # noqa: F811
    _require_arm64_handler()
    _podman_version()
    pod = yaml.safe_load(_with_registry(POD.read_text(), registry_basic))
    executor = pod["spec"]["containers"][0]
    assert "--custom-platform=linux/amd64,linux/arm64" in executor["args"]
    _load_executor(podman, executor_images, "executor", executor["image"])
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                 if "persistentVolumeClaim" in v)
    _context_volume(podman, claim, example_context(multiarch_image))
    _podman_secret(podman, work, registry_basic)
    _play(podman, work, "multi-platform-pod.yaml", yaml.safe_dump(_adapt_for_podman_43(pod)))

    code, log = _wait(podman, f"{pod['metadata']['name']}-{executor['name']}")
    assert code == 0, log[-4000:]
    assert_stages_built_as_documented(log)
    destination = next(a.split("=", 1)[1] for a in executor["args"] if a.startswith("--destination="))
    assert destination == f"{registry_basic.host}/team/app:1.0.0"
    index_digest, digests = check_index(destination, registry_basic)
    assert f"built {index_digest}" in log  # what the executor reports (and writes to the termination log)
    for arch, digest in digests.items():
        by_digest = f"{registry_basic.host}/team/app@{digest}"
        podman("pull", signature_policy(podman), "--tls-verify=false", "--creds", registry_basic.creds, by_digest,
               timeout=300)
        assert podman.inspect(by_digest)["Architecture"] == arch
        assert podman.run(by_digest).stdout == expected_output(arch)


# -- the check that lets a container run foreign RUN steps -----------------------------------------


@pytest.mark.parametrize("arch, qemu", [("amd64", "x86_64"), ("386", "i386"), ("arm64", "aarch64"), ("arm", "arm"),
                                        ("riscv64", "riscv64"), ("ppc64le", "ppc64le"), ("s390x", "s390x")])
def test_probe_programs_exit_0_under_qemu(tmp_path, arch, qemu) -> None:
    """The programs the in-container check runs are real executables of their architecture:
    `file` names it, qemu-user runs it to exit status 0, and the kernel answers as its handlers say."""
    program = tmp_path / arch
    program.write_bytes(binfmt.exit0_program(arch))
    program.chmod(0o755)
    described = subprocess.run(["file", "-b", str(program)], capture_output=True, text=True).stdout
    assert "executable" in described and "statically linked" in described, described
    emulator = shutil.which(f"qemu-{qemu}-static")
    assert emulator, "qemu-user-static is missing: run `make deps`"
    assert subprocess.run([emulator, str(program)], timeout=30).returncode == 0
    platform = Platform("linux", arch, "v7" if arch == "arm" else "")
    native = binfmt.runs_natively(platform, Platform.host())
    registered = binfmt.emulator_for(platform, binfmt.DEFAULT_BINFMT_DIR) is not None
    assert binfmt.kernel_runs(arch) == (native or registered)


# -- a stage built once for several targets: its cache entries -------------------------------------


def test_shared_buildplatform_stage_cache_entries_carry_the_stage_platform(tmp_path, registry,
                                                                          multiarch_image) -> None:  # noqa: F811
    """The BUILDPLATFORM stage runs natively once for both targets (arm64's turn comes first with
    --jobs 1): its cache entry is labelled with the host's platform, not arm64's, and a later
    build for amd64 takes it from the cache without a word about a platform mismatch."""
    from tests.test_multiplatform import build, error_text

    dockerfile = (f"FROM --platform=$BUILDPLATFORM {multiarch_image} AS tools\nRUN echo tools > /tools\n"
                  f"FROM {multiarch_image}\nCOPY --from=tools /tools /tools\n")
    cache = registry.ref("mpc/cache")
    first = build(tmp_path / "first", dockerfile, "--custom-platform", "linux/arm64,linux/amd64", "--jobs", "1",
                  "--destination", registry.ref("mpc/app:1"), "--cache=true", "--cache-repo", cache)
    assert "stage tools: same inputs as for linux/arm64, built once" in error_text(first)
    tags = json.loads(subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{cache}"],
                                     check=True, capture_output=True).stdout)["Tags"]
    entries = []
    for tag in tags:
        config = json.loads(subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false",
                                            f"docker://{cache}:{tag}"], check=True, capture_output=True).stdout)
        entries.append((config["history"][0]["created_by"].split()[0], config["architecture"]))
    assert sorted(entries) == sorted([("RUN", Platform.host().architecture), ("COPY", "amd64"), ("COPY", "arm64")])
    second = build(tmp_path / "second", dockerfile, "--custom-platform", "linux/amd64", "--destination",
                   registry.ref("mpc/app:2"), "--cache=true", "--cache-repo", cache)
    log = error_text(second)
    assert log.count("from cache, layer") == 2, log
    assert "is for platform" not in log, log
