"""Kaniko's plain-HTTP and TLS flags, side by side with its source.

Kaniko v1.24.0 (GoogleContainerTools/kaniko 236ba5690eda9170d0157aa8137ebbeb09d38685):
- pkg/image/remote/remote.go marks a *pulled* registry ``name.Insecure`` for ``--insecure-pull`` or
  ``--insecure-registry``; pkg/executor/push.go a *pushed* one for ``--insecure`` or
  ``--insecure-registry``; pkg/cache/cache.go reads the cache repo with ``--insecure``.
- pkg/util/transport_util.go ``MakeTransport`` skips verification for ``--skip-tls-verify`` or
  ``--skip-tls-verify-registry`` on every transport, pulls included.
go-containerregistry (3f4ff3ca60f51c876ac4bd89e9a787157aaa4f15): ``name.Insecure`` makes
``Registry.Scheme()`` "http", and transport/ping.go then tries HTTPS first and plain HTTP after.

The registries here listen on 127.0.0.2, a loopback address that go-containerregistry does not
treat as local (its rule names 127.0.0.1 only), so only the flags decide whether plain HTTP is
allowed: one plain-HTTP docker-registry, one with a self-signed certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pybuildless.errors import RegistryError
from pybuildless.registry.options import RegistryOptions, defaults_to_http
from pybuildless.registry.remote import fetch_image, push_image
from tests.fixtures.registry import _config_yaml, _stop_process, free_port

ADDRESS = "127.0.0.2"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")


# -- the rule, per host and direction -------------------------------------------------------

def test_insecure_is_for_pushes_insecure_pull_for_pulls_insecure_registry_for_both() -> None:
    push_side = RegistryOptions(insecure=True)
    assert push_side.plain_http("r.example") and not push_side.plain_http("r.example", pull=True)
    pull_side = RegistryOptions(insecure_pull=True)
    assert pull_side.plain_http("r.example", pull=True) and not pull_side.plain_http("r.example")
    one_host = RegistryOptions(insecure_registries=("r.example",))
    assert one_host.plain_http("r.example") and one_host.plain_http("r.example", pull=True)
    assert not one_host.plain_http("s.example") and not one_host.plain_http("s.example", pull=True)


def test_skip_tls_verify_covers_pulls_skip_tls_verify_pull_only_pulls() -> None:
    # MakeTransport reads SkipTLSVerify for every transport it makes, pulls included
    assert RegistryOptions(skip_tls_verify=True).verify_tls("r.example", pull=True) is False
    assert RegistryOptions(skip_tls_verify=True).verify_tls("r.example") is False
    assert RegistryOptions(skip_tls_verify_pull=True).verify_tls("r.example") is True
    assert RegistryOptions(skip_tls_verify_pull=True).verify_tls("r.example", pull=True) is False
    assert RegistryOptions(skip_tls_verify_registries=("r.example",)).verify_tls("r.example") is False


@pytest.mark.parametrize("host, local", [
    # go-containerregistry pkg/name/registry.go: isRFC1918, "localhost:" prefix, reLocal,
    # reLoopback (127.0.0.1 only), reipv6Loopback
    ("127.0.0.1", True), ("127.0.0.1:5000", True), ("127.0.0.2:5000", False), ("127.1.2.3", False),
    ("localhost:5000", True), ("localhost", False), ("reg.localhost", True), ("reg.localhost:5000", True),
    ("[::1]:5000", True), ("::1", True), ("10.1.2.3:5000", True), ("172.16.0.1", True),
    ("172.31.255.255:1", True), ("172.32.0.1", False), ("192.168.0.10:443", True), ("192.169.0.1", False),
    ("169.254.1.1", False), ("reg.local:5000", False), ("registry.example.com", False),
])
def test_names_that_are_insecure_without_a_flag_match_go_containerregistry(host: str, local: bool) -> None:
    assert defaults_to_http(host) is local


# -- real registries on 127.0.0.2 -------------------------------------------------------------

def _serve(workdir: Path, config: str, probe: str, context=None):
    (workdir / "config.yml").write_text(config)
    log = open(workdir / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(probe, timeout=2, context=context):
                break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                _stop_process(proc)
                log.close()
                raise RuntimeError((workdir / "registry.log").read_text()[-2000:])
            time.sleep(0.05)
    return proc, log


@pytest.fixture(scope="module")
def http_registry(tmp_path_factory):
    """Plain HTTP on 127.0.0.2: reachable only when the flags allow plain HTTP for it."""
    d = tmp_path_factory.mktemp("insecure-http")
    port = free_port()
    config = _config_yaml(d / "data", port, "").replace(f"127.0.0.1:{port}", f"{ADDRESS}:{port}")
    assert f"{ADDRESS}:{port}" in config
    proc, log = _serve(d, config, f"http://{ADDRESS}:{port}/v2/")
    try:
        yield f"{ADDRESS}:{port}"
    finally:
        _stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    """HTTPS only on 127.0.0.2, with a self-signed certificate (its CA file is returned too)."""
    import ssl

    d = tmp_path_factory.mktemp("insecure-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuildless insecure-flags test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ADDRESS))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    port = free_port()
    config = (_config_yaml(d / "data", port, "").replace(f"127.0.0.1:{port}", f"{ADDRESS}:{port}")
              + f"  tls:\n    certificate: {d / 'cert.pem'}\n    key: {d / 'key.pem'}\n")
    assert config.count("  tls:") == 1 and "http:\n" in config
    context = ssl.create_default_context(cafile=str(d / "cert.pem"))
    proc, log = _serve(d, config, f"https://{ADDRESS}:{port}/v2/", context)
    try:
        yield f"{ADDRESS}:{port}", d / "cert.pem"
    finally:
        _stop_process(proc)
        log.close()


def test_the_http_fixture_needs_a_flag(http_registry) -> None:
    """Without a flag 127.0.0.2 is HTTPS only: the checks below can fail."""
    with pytest.raises(RegistryError):
        fetch_image(f"{http_registry}/none/x:1", options=RegistryOptions(retries=0))


def test_insecure_pushes_in_plain_http_but_does_not_pull_so(http_registry, busybox_image) -> None:
    source = fetch_image(busybox_image)
    digest = push_image(source, [f"{http_registry}/ins/push:1"], options=RegistryOptions(insecure=True))
    with pytest.raises(RegistryError):  # --insecure is not for pulls (Kaniko: --insecure-pull)
        fetch_image(f"{http_registry}/ins/push:1", options=RegistryOptions(insecure=True, retries=0))
    pulled = fetch_image(f"{http_registry}/ins/push:1", options=RegistryOptions(insecure_pull=True))
    assert pulled.digest == digest
    with pytest.raises(RegistryError):  # --insecure-pull is not for pushes
        push_image(source, [f"{http_registry}/ins/push:2"], options=RegistryOptions(insecure_pull=True, retries=0))
    both = RegistryOptions(insecure_registries=(http_registry,))
    assert push_image(source, [f"{http_registry}/ins/push:3"], options=both) == digest
    assert fetch_image(f"{http_registry}/ins/push:3", options=both).digest == digest


def test_an_insecure_registry_that_speaks_tls_is_reached_over_https(tls_registry, busybox_image) -> None:
    """HTTPS first: --insecure with --skip-tls-verify pushes to a TLS-only registry; the
    certificate is still checked without --skip-tls-verify (no downgrade to plain HTTP)."""
    host, _cert = tls_registry
    source = fetch_image(busybox_image)
    with pytest.raises(RegistryError, match="TLS certificate"):
        push_image(source, [f"{host}/ins/tls:1"], options=RegistryOptions(insecure=True, retries=0))
    skipping = RegistryOptions(insecure=True, skip_tls_verify=True)
    digest = push_image(source, [f"{host}/ins/tls:1"], options=skipping)
    pulling = RegistryOptions(insecure_pull=True, skip_tls_verify_pull=True)
    assert fetch_image(f"{host}/ins/tls:1", options=pulling).digest == digest


# -- through the executor, as a pasted Kaniko command line ------------------------------------

def _build(tmp_path: Path, base: str, dest: str, *flags: str, check: bool = True):
    from tests.buildkit import executor, write_context

    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nCOPY f /f\n", "f": "insecure flags\n"})
    return executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", dest,
                    *flags, cwd=tmp_path, check=check,
                    env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "DOCKER_CONFIG": str(tmp_path / "docker")})


@needs_root
def test_build_insecure_base_over_tls_destination_over_http(tls_registry, http_registry, busybox_image,
                                                            tmp_path) -> None:
    host, cert = tls_registry
    base = f"{host}/ins/base:1"
    push_image(fetch_image(busybox_image), [base], options=RegistryOptions(certificates=((host, str(cert)),)))
    dest = f"{http_registry}/ins/app:1"
    _build(tmp_path, base, dest, "--insecure", f"--registry-certificate={host}={cert}")
    pushed = fetch_image(dest, options=RegistryOptions(insecure_pull=True))
    assert len(list(pushed.layers())) == 2


@needs_root
def test_build_insecure_does_not_pull_the_base_in_plain_http(http_registry, busybox_image, tmp_path) -> None:
    base = f"{http_registry}/ins/httpbase:1"
    push_image(fetch_image(busybox_image), [base], options=RegistryOptions(insecure=True))
    dest = f"{http_registry}/ins/app2:1"
    failed = _build(tmp_path / "a", base, dest, "--insecure", "--image-download-retry=0", check=False)
    assert failed.returncode != 0 and b"Traceback" not in failed.stderr
    assert http_registry.encode() in failed.stderr
    _build(tmp_path / "b", base, dest, "--insecure", "--insecure-pull")
    assert len(list(fetch_image(dest, options=RegistryOptions(insecure_pull=True)).layers())) == 2


@needs_root
def test_build_insecure_skip_tls_verify_pushes_to_a_self_signed_registry(tls_registry, busybox_image,
                                                                         tmp_path) -> None:
    """Kaniko's --skip-tls-verify also covers the base pull (MakeTransport), so this one flag pair
    pulls and pushes against a self-signed registry."""
    host, _cert = tls_registry
    base = f"{host}/ins/selfbase:1"
    push_image(fetch_image(busybox_image), [base], options=RegistryOptions(skip_tls_verify=True))
    dest = f"{host}/ins/selfapp:1"
    _build(tmp_path, base, dest, "--insecure", "--skip-tls-verify")
    assert len(list(fetch_image(dest, options=RegistryOptions(skip_tls_verify=True)).layers())) == 2


# -- credentials stay on HTTPS when the host answers HTTPS --------------------------------------

@pytest.fixture
def dual_registry(tmp_path):
    """A token-auth registry answering both TLS and plain HTTP on one port (see test_registry_review)."""
    from tests.test_registry_review import _dual_registry

    yield from _dual_registry(tmp_path, relative_urls=True)


@needs_root
def test_insecure_flags_send_nothing_in_clear_to_a_host_that_answers_https(dual_registry, busybox_image,
                                                                           tmp_path) -> None:
    from tests.fixtures.registry import DEFAULT_PASSWORD, DEFAULT_USERNAME
    from tests.test_registry_review import _options

    host, cert, _issuer, front = dual_registry
    push_image(fetch_image(busybox_image), [f"{host}/ins/base:1"], options=_options(host, cert))
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(f"{DEFAULT_USERNAME}:{DEFAULT_PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    _build(tmp_path, f"{host}/ins/base:1", f"{host}/ins/app:1", "--insecure", "--insecure-pull",
           f"--insecure-registry={host}", f"--registry-certificate={host}={cert}")
    assert bytes(front.plain) == b"", "a request went in plain HTTP to a registry that answers HTTPS"
    assert len(list(fetch_image(f"{host}/ins/app:1", options=_options(host, cert)).layers())) == 2


# -- `pybuildless pull` / `push`: --insecure is about the one registry they talk to -----------------

def test_pull_and_push_commands_insecure_reach_a_plain_http_registry(http_registry, busybox_image,
                                                                     tmp_path) -> None:
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pybuildless", *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})

    ref = f"{http_registry}/ins/cmd:1"
    digest = push_image(fetch_image(busybox_image), [ref], options=RegistryOptions(insecure=True))
    layout = tmp_path / "layout"
    refused = cli("pull", "--retries=0", ref, str(tmp_path / "refused"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    pulled = cli("pull", "--insecure", ref, str(layout))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == f"{ref}@{digest}"
    pushed = cli("push", "--insecure", str(layout), f"{http_registry}/ins/cmd:2")
    assert pushed.returncode == 0, pushed.stderr
    assert fetch_image(f"{http_registry}/ins/cmd:2", options=RegistryOptions(insecure_pull=True)).digest == digest


@needs_root
def test_build_insecure_reads_and_writes_the_cache_repo_in_plain_http(tls_registry, http_registry, busybox_image,
                                                                      tmp_path) -> None:
    """Kaniko's pkg/cache/cache.go reads the cache repo with --insecure (a push-side flag), and
    pushes it as a destination: the second build, with an empty local store, takes its RUN layer
    from the plain-HTTP cache repo."""
    from tests.buildkit import executor, write_context

    host, cert = tls_registry
    base = f"{host}/ins/cachebase:1"
    push_image(fetch_image(busybox_image), [base], options=RegistryOptions(certificates=((host, str(cert)),)))
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN echo cached > /c\n"})
    outputs = []
    for n in (1, 2):
        proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--no-push", "--cache",
                        f"--cache-repo={http_registry}/ins/cache", "--insecure",
                        f"--registry-certificate={host}={cert}", cwd=tmp_path,
                        env={"XDG_CACHE_HOME": str(tmp_path / f"cache{n}"), "DOCKER_CONFIG": str(tmp_path / "docker")})
        outputs.append((proc.stdout + proc.stderr).decode(errors="replace"))
    assert "from cache" not in outputs[0]
    assert "from cache" in outputs[1] and "look-up" not in outputs[1], outputs[1]
