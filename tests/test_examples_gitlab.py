"""examples/gitlab-ci/.gitlab-ci.yml, unchanged, run by a GitLab CI runner emulator.

gitlab-ci-local (npm, 4.60.x for Node 20) runs the jobs on the Docker engine
fixture with the ``:debug`` executor image built from this checkout, tagged
with the name the example uses. CI variables point at the basic-auth registry
fixture, so the job's own ``before_script`` (which writes
/kaniko/.docker/config.json from CI_REGISTRY_USER/PASSWORD) is what lets the
push through. The release job's image is then run by Docker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.fixtures.dockerd import DockerEngine, ExecutorImages

# the executor images are built once per session, within the first test's time
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gitlab-ci" / ".gitlab-ci.yml"
# The tools gitlab-ci-local's helper container runs: it chowns the job's files, and copies the
# artifacts out with `bash -c "shopt ...; rsync -Ra PATHS /artifacts/JOB/."` (src/job.js, copyOut).
HELPER_TOOLS = ("bash", "dash", "chown", "chmod", "cp", "mkdir", "rm", "mv", "ln", "cat", "ls", "tar", "gzip",
                "find", "stat", "touch", "env", "id", "sleep", "true", "false", "test", "dirname", "basename",
                "rsync")


def _gitlab_ci_local() -> str:
    path = shutil.which("gitlab-ci-local")
    if path is None:
        pytest.fail("gitlab-ci-local is missing: `make deps` installs it (npm install -g gitlab-ci-local@4.60.1)")
    return path


def _helper_image(engine: DockerEngine, work: Path) -> str:
    """A small Debian-like image (this machine's own binaries) for gitlab-ci-local's helper container."""
    import sys

    sys.path.insert(0, str(ROOT / "docker"))
    try:
        from make_local_bases import GROUP, PASSWD, _copy_libs
    finally:
        sys.path.pop(0)
    root = work / "helper-rootfs"
    for d in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc", "tmp", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    for tool in HELPER_TOOLS:
        src = shutil.which(tool, path="/usr/bin:/bin")
        if src is None:
            pytest.fail(f"{tool} missing on this machine (needed for the CI helper image)")
        real = Path(os.path.realpath(src))
        shutil.copy2(real, root / "usr/bin" / tool)
        _copy_libs(real, root)
    (root / "usr/bin/sh").symlink_to("dash")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    tar_path = work / "helper.tar"
    with tarfile.open(tar_path, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    engine.docker("import", str(tar_path), "local/ci-helper:1")
    return "local/ci-helper:1"


@pytest.fixture(scope="module")
def gitlab_project(dockerd: DockerEngine, executor_images: ExecutorImages, tmp_path_factory) -> dict:
    """A git repository holding the example pipeline unchanged and a Dockerfile with RUN steps."""
    work = tmp_path_factory.mktemp("gitlab")
    ci = yaml.safe_load(EXAMPLE.read_text())
    dockerd.docker("tag", executor_images.ref("debug"), ci[".pybuildless"]["image"]["name"])
    project = work / "project"
    project.mkdir()
    shutil.copy2(EXAMPLE, project / ".gitlab-ci.yml")
    (project / "Dockerfile").write_text(
        f"FROM {executor_images.bases['busybox']} AS build\n"
        "RUN mkdir /out && echo \"built in CI on $(uname -m)\" > /out/msg\n"
        f"FROM {executor_images.bases['busybox']}\n"
        "COPY --from=build /out/msg /msg\n"
        "RUN echo 'second RUN ok' >> /msg\n"
        'CMD ["cat", "/msg"]\n')
    git = ["git", "-C", str(project), "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "app"],
                 ["remote", "add", "origin", "https://gitlab.example.com/group/app.git"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return {"dir": project, "helper": _helper_image(dockerd, work)}


def _run_job(engine: DockerEngine, project: dict, registry, job: str, *variables: str) -> subprocess.CompletedProcess:
    argv = [_gitlab_ci_local(), "--pull-policy", "if-not-present", "--helper-image", project["helper"],
            "--network", "host",
            "--variable", f"CI_REGISTRY={registry.host}",
            "--variable", f"CI_REGISTRY_IMAGE={registry.host}/group/app",
            "--variable", f"CI_REGISTRY_USER={registry.username}",
            "--variable", f"CI_REGISTRY_PASSWORD={registry.password}"]
    for variable in variables:
        argv += ["--variable", variable]
    env = {**os.environ, **engine.env, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}
    return subprocess.run([*argv, job], cwd=project["dir"], env=env, capture_output=True, text=True, timeout=600)


def test_release_job_builds_pushes_and_the_image_runs(dockerd, gitlab_project, registry_basic) -> None:
    proc = _run_job(dockerd, gitlab_project, registry_basic, "build-release", "CI_COMMIT_TAG=v1")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout and "build-release" in proc.stdout
    # The artifact the job declares: the digest of what it pushed.
    digest = (gitlab_project["dir"] / "image-digest").read_text().strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    dockerd.docker("login", "-u", registry_basic.username, "--password-stdin", registry_basic.host,
                   input=registry_basic.password.encode())
    for tag in ("v1", "latest"):
        ref = f"{registry_basic.host}/group/app:{tag}"
        dockerd.docker("pull", "-q", ref)
        repo_digests = dockerd.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout.decode()
        assert digest in repo_digests
        out = dockerd.docker("run", "--rm", ref).stdout.decode()
        assert out == f"built in CI on {os.uname().machine}\nsecond RUN ok\n"


def _tags(registry, repo: str) -> set[str]:
    proc = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", "--creds", registry.creds,
                           f"docker://{registry.host}/{repo}"], capture_output=True, text=True)
    return set(yaml.safe_load(proc.stdout)["Tags"]) if proc.returncode == 0 else set()


def test_merge_request_job_builds_without_pushing(dockerd, gitlab_project, registry_basic) -> None:
    before = _tags(registry_basic, "group/app")
    proc = _run_job(dockerd, gitlab_project, registry_basic, "build-merge-request",
                    "CI_PIPELINE_SOURCE=merge_request_event")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout and "build-merge-request" in proc.stdout
    # it really built (the executor logs to stderr, which gitlab-ci-local passes through as such)
    assert len(re.findall(r"STEP \d+/\d+: RUN ", proc.stdout + proc.stderr)) == 2, proc.stderr[-3000:]
    # --no-push: the image's tags are what they were; the layer cache repository is filled.
    assert _tags(registry_basic, "group/app") == before
    assert _tags(registry_basic, "group/app/cache")
