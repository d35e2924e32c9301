"""Kaniko mode's credentials under a real Docker engine: the executor image as an ordinary
container, registry credentials in /kaniko/.docker/config.json (a read-only bind, as a
Kubernetes secret or ``-v ~/.docker/config.json:...`` gives them), pushing to the basic-auth
registry so the credentials are needed.

* Docker's default seccomp profile: no user namespace and no CAP_SYS_ADMIN, so the prefix
  cannot be hidden: the build works and one warning says so.
* ``--security-opt seccomp=unconfined``: RUN steps run in a user namespace with /kaniko
  covered; every way a step tries to reach the credentials fails, the secret is nowhere in
  the pushed image, and the push (which needs them) succeeds.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.buildkit import write_context
from tests.test_kaniko_mode import FLAG_SECRET, LEAK_DOCKERFILE, LEAK_FILES

# The first test also builds the executor image (several minutes on a busy machine).
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(2400)]

WARNING = "RUN steps can read /kaniko"
TOKEN = "env-t0ken-for-the-executor"  # in the executor's environment only


def _docker_config(tmp_path: Path, server) -> tuple[Path, bytes]:
    """A config.json with the basic-auth registry's credentials; returns it and the auth string."""
    auth = base64.b64encode(f"{server.username}:{server.password}".encode())
    conf = tmp_path / "docker-config" / "config.json"
    conf.parent.mkdir()
    conf.write_text(json.dumps({"auths": {server.host: {"auth": auth.decode()}}}))
    os.chmod(conf.parent, 0o755)
    os.chmod(conf, 0o644)
    return conf, auth


def _run_executor(dockerd, image: str, ctx: Path, conf: Path, destination: str, *options: str):
    return dockerd.docker(
        "run", "--rm", "--network", "host", *options, "-e", f"SOME_TOKEN={TOKEN}",
        "-v", f"{ctx}:/workspace", "-v", f"{conf}:/kaniko/.docker/config.json:ro", image,
        "--context", "dir:///workspace", "--destination", destination, "--build-arg", f"UNUSED={FLAG_SECRET}",
        check=False, timeout=600)


def _pull_layers(ref: str, server, work: Path) -> tuple[Path, list[bytes]]:
    """The pushed image as an OCI layout (credentials needed) and every blob, layers decompressed."""
    work.mkdir(parents=True, exist_ok=True)
    layout = work / "layout"
    proc = subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", server.creds,
                           f"docker://{ref}", f"oci:{layout}:img"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    blobs = []
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        data = blob.read_bytes()
        blobs.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return layout, blobs


def _file_in_layers(blobs: list[bytes], name: str) -> bytes | None:
    import io
    import tarfile

    found = None
    for data in blobs:
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    if member.name.lstrip("./") == name and member.isfile():
                        found = tar.extractfile(member).read()
        except tarfile.TarError:
            continue
    return found


def test_default_seccomp_warns_once_and_builds(dockerd, executor_images, registry, registry_basic, busybox_image,
                                               tmp_path) -> None:
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN echo one > /one\n"
                                                         "RUN echo two > /two\n"})
    conf, _ = _docker_config(tmp_path, registry_basic)
    ref = registry_basic.ref("kaniko-mode/default:1")
    proc = _run_executor(dockerd, executor_images.ref("executor"), ctx, conf, ref)
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, log
    assert log.count(WARNING) == 1, log
    warning = next(line for line in log.splitlines() if WARNING in line)
    assert "--mount=type=secret" in warning and "seccomp=unconfined" in warning
    _, blobs = _pull_layers(ref, registry_basic, tmp_path / "pulled")
    assert _file_in_layers(blobs, "two") == b"two\n"


def test_unconfined_seccomp_hides_the_credentials(dockerd, executor_images, registry, registry_basic, busybox_image,
                                                  tmp_path) -> None:
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": LEAK_DOCKERFILE.format(base=busybox_image)})
    conf, auth = _docker_config(tmp_path, registry_basic)
    ref = registry_basic.ref("kaniko-mode/hidden:1")
    proc = _run_executor(dockerd, executor_images.ref("executor"), ctx, conf, ref,
                         "--security-opt", "seccomp=unconfined")
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, log  # the push needed the credentials the steps could not see
    assert WARNING not in log, log
    _, blobs = _pull_layers(ref, registry_basic, tmp_path / "pulled")
    assert _file_in_layers(blobs, "built") == b"built\n"
    for name in LEAK_FILES:
        assert _file_in_layers(blobs, name) == b"", name
    env_seen = _file_in_layers(blobs, "leak-proc-env")
    assert env_seen is not None and TOKEN.encode() not in env_seen and FLAG_SECRET.encode() not in env_seen
    everything = b"".join(blobs)
    for secret in (auth, registry_basic.password.encode(), TOKEN.encode(), FLAG_SECRET.encode()):
        assert secret not in everything, secret


def test_unconfined_seccomp_keeps_root_powers(dockerd, executor_images, registry, busybox_image, tmp_path) -> None:
    """In the step's user namespace (identity map) root still owns every id: chown, a new user's
    files, setuid bits and nested privileges behave as in Docker's own build."""
    dockerfile = (f"FROM {busybox_image}\n"
                  "RUN echo 'app:x:2000:2001::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:2001:' >> /etc/group"
                  " && mkdir -p /home/app && chown app:app /home/app && touch /suid && chmod 4755 /suid"
                  " && su app -s /bin/sh -c 'id -u > /home/app/id; touch /home/app/mine'"
                  " && cat /proc/self/uid_map > /uidmap\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    ref = registry.ref("kaniko-mode/powers:1")
    proc = dockerd.docker("run", "--rm", "--network", "host", "--security-opt", "seccomp=unconfined",
                          "-v", f"{ctx}:/workspace", executor_images.ref("executor"),
                          "--context", "dir:///workspace", "--destination", ref, check=False, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")
    dockerd.docker("pull", "-q", ref)
    out = dockerd.docker("run", "--rm", "--entrypoint", "/bin/sh", ref, "-c",
                         "stat -c '%u:%g' /home/app /home/app/mine; stat -c %a /suid; cat /home/app/id /uidmap")
    lines = out.stdout.decode().split("\n")
    assert lines[:4] == ["2000:2001", "2000:2001", "4755", "2000"], lines
    # the identity map of all ids the container has (Docker here: no user namespace of its own)
    assert lines[4].split() == ["0", "0", "4294967295"], lines
