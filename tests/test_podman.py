"""A real container engine takes what pybuildless builds: podman loads the ``--tar-path`` tarball,
pulls the pushed image from the loopback registry, and runs both.

podman runs with private state (tests/fixtures/podman.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.buildkit import executor, write_context
from tests.fixtures.podman import Podman, podman, signature_policy  # noqa: F401  (podman: fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds and podman's rootful mode need root"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

DOCKERFILE = """\
FROM {base}
ENV GREETING="hello from podman" APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY --chmod=0755 greet.sh /usr/local/bin/greet
COPY --chown=user:user data/ ./data/
RUN echo "made by RUN as $(id -u)" > made.txt
USER user
ENTRYPOINT ["/usr/local/bin/greet"]
CMD ["--default-arg"]
"""

GREET = """\
#!/bin/sh
echo "args: $*"
echo "greeting: $GREETING"
echo "pwd: $(pwd)"
echo "ids: $(id -u):$(id -g)"
cat made.txt data/message.txt
"""


def expected_output(args: str) -> str:
    return (f"args: {args}\ngreeting: hello from podman\npwd: /srv/app\nids: 1000:1000\n"
            "made by RUN as 0\nfrom the context\n")


@dataclass(frozen=True)
class Built:
    ref: str  # 127.0.0.1:PORT/podman/app:1, pushed and the tarball's tag
    tarball: Path
    manifest_digest: str  # what was pushed (--digest-file)
    config_digest: str  # the config blob in the tarball


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, registry, busybox_image) -> Built:
    work = tmp_path_factory.mktemp("podman-build")
    ctx = write_context(work / "ctx", {
        "Dockerfile": DOCKERFILE.format(base=busybox_image),
        "greet.sh": GREET,
        "data/message.txt": "from the context\n",
    })
    ref = registry.ref("podman/app:1")
    tarball = work / "image.tar"
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
             "--tar-path", str(tarball), "--digest-file", str(work / "digest"), cwd=work)
    with tarfile.open(tarball) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        config_blob = tar.extractfile(entry["Config"]).read()
    assert entry["RepoTags"] == [ref]
    return Built(ref, tarball, (work / "digest").read_text(), "sha256:" + hashlib.sha256(config_blob).hexdigest())


def assert_config(info: dict, built: Built) -> None:
    assert "sha256:" + info["Id"] == built.config_digest
    config = info["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/greet"]
    assert config["Cmd"] == ["--default-arg"]
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "user"
    assert {"GREETING=hello from podman", "APP_HOME=/srv/app"} <= set(config["Env"])
    assert any(e.startswith("PATH=") for e in config["Env"])


# --- tests ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["load", "docker-archive"])
def test_podman_loads_and_runs_the_tarball(built: Built, podman: Podman, how: str) -> None:
    # The tarball is both a docker-save archive and an OCI layout: `podman load` reads it as an
    # OCI archive (index.json), the docker-archive transport reads manifest.json as `docker load` does.
    if how == "load":
        out = podman("load", signature_policy(podman), "--input", str(built.tarball)).stdout
        assert f"Loaded image: {built.ref}" in out
    else:
        out = podman("pull", signature_policy(podman), f"docker-archive:{built.tarball}").stdout
        assert out.strip() == built.config_digest.split(":", 1)[1]
    info = podman.inspect(built.ref)
    assert info["RepoTags"] == [built.ref]
    assert_config(info, built)

    assert podman.run(built.ref).stdout == expected_output("--default-arg")
    # arguments replace Cmd and still go to the Entrypoint
    assert podman.run(built.ref, "one", "two words").stdout == expected_output("one two words")


def test_podman_pulls_and_runs_the_pushed_image(built: Built, podman: Podman) -> None:
    # the pushed manifest names the same config blob as the tarball
    podman("pull", signature_policy(podman), "--tls-verify=false", f"docker://{built.ref}")
    info = podman.inspect(built.ref)
    assert_config(info, built)
    assert info["Digest"] == built.manifest_digest
    repo = built.ref.rsplit(":", 1)[0]
    assert f"{repo}@{built.manifest_digest}" in info["RepoDigests"]

    by_digest = f"{repo}@{built.manifest_digest}"
    assert podman.run(by_digest).stdout == expected_output("--default-arg")
