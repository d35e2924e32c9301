"""Kaniko's file conventions in the executor image, and the image on the bases it documents.

- CA certificates appended as /kaniko/ssl/certs/additional-ca-cert-bundle.crt are trusted (every
  file in SSL_CERT_DIR, as Go's crypto/x509 reads it for Kaniko), tested against a TLS registry
  whose CA is only in that file;
- credentials in /kaniko/.docker/config.json;
- the :debug variant's /busybox shell with GitLab's ``entrypoint: [""]`` and a writable /tmp;
- Dockerfile.executor on a python:*-slim stand-in and on Debian's python3 + python3-pip layout
  (Debian's Python looks in dist-packages only): the executor builds on both.

All images run under Debian's Docker engine (tests/fixtures/dockerd.py), as ordinary containers.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from pybuildless.errors import RegistryError
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, push_image
from tests.fixtures.dockerd import DockerEngine, ExecutorImages, _build_executor_targets
from tests.test_registry_tls import tls_registry  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the executor images are built per session

ADDITIONAL = "additional-ca-cert-bundle.crt"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


# --- SSL_CERT_DIR as Go reads it, in-process --------------------------------------------------


def _cert_dir(tmp_path: Path, extra_ca: Path | None) -> Path:
    """/kaniko/ssl/certs as the image has it: the system bundle, and the extra CA if given."""
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copyfile(SYSTEM_BUNDLE, certs / "ca-certificates.crt")
    if extra_ca is not None:
        (certs / ADDITIONAL).write_bytes(extra_ca.read_bytes())
    return certs


def _options(n: int) -> RegistryOptions:
    """Options that differ per step: connections are shared per (host, options) in a process, and
    each step must open its own with the roots of that moment."""
    return RegistryOptions(retries=0, parallel=n)


def test_a_ca_only_in_the_additional_bundle_is_trusted(tls_registry, busybox_image, tmp_path,
                                                       monkeypatch) -> None:
    host, ca = tls_registry
    source = fetch_image(busybox_image)
    certs = _cert_dir(tmp_path, ca)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca-certificates.crt"))
    monkeypatch.setenv("SSL_CERT_DIR", str(certs))
    digest = push_image(source, [f"{host}/ca/app:v1"], options=_options(1))
    assert fetch_image(f"{host}/ca/app:v1", options=_options(2)).digest == digest
    # the control: the same directory without the extra file does not trust the registry
    (certs / ADDITIONAL).unlink()
    with pytest.raises(RegistryError, match="TLS certificate not trusted"):
        fetch_image(f"{host}/ca/app:v1", options=_options(3))
    # and SSL_CERT_FILE still counts: the CA as the file itself
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert fetch_image(f"{host}/ca/app:v1", options=_options(4)).digest == digest


def test_a_symlink_within_the_directory_is_not_read_twice_and_garbage_is_skipped(tmp_path, tls_registry,
                                                                                  monkeypatch) -> None:
    from pybuildless.registry.trust import go_root_certificates

    _host, ca = tls_registry
    certs = _cert_dir(tmp_path, None)
    (certs / "extra.pem").write_bytes(b"not a certificate\n" + ca.read_bytes() + b"trailing text\n")
    (certs / "abcd1234.0").symlink_to("extra.pem")  # c_rehash's link: Go skips it
    (certs / "sub").mkdir()  # directories are not files
    env = {"SSL_CERT_FILE": str(certs / "ca-certificates.crt"), "SSL_CERT_DIR": f"{certs}:{tmp_path / 'missing'}"}
    found = go_root_certificates(env)
    bundle = go_root_certificates({"SSL_CERT_FILE": str(certs / "ca-certificates.crt"), "SSL_CERT_DIR": "/nonexistent"})
    pem = ca.read_text().strip()
    # the system bundle twice (as the file, and as a file of the directory) and the CA once
    assert found.count(pem) == 1 and len(found) == 2 * len(bundle) + 1
    assert go_root_certificates({}) is None  # neither set: the default verification applies
    # SSL_CERT_FILE alone: that file, then Go's default directories
    only_file = go_root_certificates({"SSL_CERT_FILE": str(ca)})
    assert only_file[0] == pem and len(only_file) > 1


# --- the executor image under Docker ----------------------------------------------------------


def _context(path: Path, base: str, word: str) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(
        f"FROM {base}\n"
        f"RUN echo \"{word} from $(cat /etc/os-release 2>/dev/null | head -1 || echo busybox)\" > /msg\n"
        'CMD ["cat", "/msg"]\n')
    return path


def test_debug_image_runs_job_scripts_with_a_writable_tmp(dockerd: DockerEngine,
                                                          executor_images: ExecutorImages) -> None:
    # GitLab: `entrypoint: [""]`, the script is fed to the image's shell
    script = 'f=$(mktemp) && echo "tmp ok" > "$f" && cat "$f" && stat -c %a /tmp && echo "$PATH" && which sh'
    out = dockerd.docker("run", "--rm", "--entrypoint", "", executor_images.ref("debug"),
                         "/busybox/sh", "-c", script).stdout.decode().split("\n")
    assert out[0] == "tmp ok"
    assert out[1] == "1777"
    assert "/busybox" in out[2].split(":") and out[3] == "/busybox/sh"


def test_credentials_come_from_kaniko_docker_config(dockerd, executor_images, registry_basic, tmp_path,
                                                    busybox_image) -> None:
    ctx = _context(tmp_path / "ctx", busybox_image, "authed")
    dest = registry_basic.ref("conv/creds:1")
    argv = ["run", "--rm", "--network", "host", "-v", f"{ctx}:/workspace:ro"]
    image_args = [executor_images.ref("executor"), "--context", "dir:///workspace", "--destination", dest]
    # the control first: without credentials the registry refuses the push
    denied = dockerd.docker(*argv, *image_args, check=False)
    assert denied.returncode != 0
    assert b"401" in denied.stderr or b"unauthorized" in denied.stderr.lower() or b"denied" in denied.stderr.lower()
    config = tmp_path / "config.json"
    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode()).decode()
    config.write_text(json.dumps({"auths": {registry_basic.host: {"auth": auth}}}))
    dockerd.docker(*argv, "-v", f"{config}:/kaniko/.docker/config.json:ro", *image_args)
    dockerd.docker("login", "-u", registry_basic.username, "--password-stdin", registry_basic.host,
                   input=registry_basic.password.encode())
    dockerd.docker("pull", "-q", dest)
    assert dockerd.docker("run", "--rm", dest).stdout.decode().startswith("authed from ")


def test_additional_ca_bundle_appended_in_a_job_script(dockerd, executor_images, tls_registry, tmp_path,
                                                       busybox_image) -> None:
    """GitLab's recipe: the job appends its CA to /kaniko/ssl/certs/additional-ca-cert-bundle.crt."""
    host, ca = tls_registry
    ctx = _context(tmp_path / "ctx", busybox_image, "tls")
    dest = f"{host}/conv/tls:1"
    run = ["run", "--rm", "--network", "host", "-v", f"{ctx}:/workspace:ro", "-v", f"{ca}:/ca.pem:ro",
           "--entrypoint", "", executor_images.ref("debug"), "/busybox/sh", "-c"]
    build = f"/kaniko/executor --context dir:///workspace --destination {dest} --push-retry 0"
    refused = dockerd.docker(*run, build, check=False)
    assert refused.returncode != 0 and b"TLS certificate not trusted" in refused.stderr, refused.stderr[-2000:]
    dockerd.docker(*run, f"cat /ca.pem >> /kaniko/ssl/certs/{ADDITIONAL} && {build}")
    resp = requests.get(f"https://{host}/v2/conv/tls/manifests/1", verify=str(ca), timeout=10,
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                           "application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code == 200 and json.loads(resp.content)["layers"]


# --- Dockerfile.executor on both kinds of base -----------------------------------------------


@pytest.fixture(scope="module")
def debian_executor(dockerd, registry, executor_sources, executor_bases) -> str:
    """The executor target built FROM the Debian python3 + python3-pip stand-in."""
    images = _build_executor_targets(dockerd, registry, executor_sources, executor_bases, ("executor",),
                                     python_base="debian-python", tag_prefix="debian-")
    return images.ref("executor")


@pytest.mark.parametrize("base", ["python-slim", "debian-python3-pip"])
def test_executor_builds_on_each_documented_base(request, dockerd, executor_images, registry, tmp_path,
                                                 busybox_image, base) -> None:
    image = (executor_images.ref("executor") if base == "python-slim"
             else request.getfixturevalue("debian_executor"))
    ctx = _context(tmp_path / "ctx", busybox_image, base)
    dest = registry.ref(f"conv/bases:{base}")
    dockerd.docker("run", "--rm", "--network", "host", "-v", f"{ctx}:/workspace:ro", image,
                   "--context", "dir:///workspace", "--destination", dest)
    dockerd.docker("pull", "-q", dest)
    assert dockerd.docker("run", "--rm", dest).stdout.decode().startswith(f"{base} from ")
    # What the base's own site rules would have given: Debian's Python never looks in the
    # runtime's site-packages, python.org's does. The executor works either way.
    probe = dockerd.docker("run", "--rm", "--entrypoint", "/kaniko/bin/python3", image, "-I", "-c",
                           "import pybuildless", check=False)
    if base == "debian-python3-pip":
        assert probe.returncode != 0 and b"No module named 'pybuildless'" in probe.stderr
    else:
        assert probe.returncode == 0, probe.stderr
