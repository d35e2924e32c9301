"""A TLS registry with its own CA: trusted through --registry-certificate or skipped
verification; an untrusted certificate is reported as such (never silently downgraded)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pybuildless.errors import RegistryError
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, push_image
from tests.fixtures.registry import free_port

pytestmark = pytest.mark.slow


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool, ip: str | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls-registry")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuildless test CA")])
    ca = _cert("pybuildless test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_name, ca_key, ca=False, ip="127.0.0.1")
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    port = free_port()
    (d / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: tls-test\n"
        f"  tls:\n    certificate: {d / 'cert.pem'}\n    key: {d / 'key.pem'}\n"
    )
    log = open(d / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(d / "ca.pem"))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", timeout=2, context=context):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((d / "registry.log").read_text()[-2000:])
                time.sleep(0.05)
        yield f"127.0.0.1:{port}", d / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_untrusted_certificate_is_reported_not_downgraded(tls_registry):
    host, _ca = tls_registry
    with pytest.raises(RegistryError, match="TLS certificate not trusted"):
        fetch_image(f"{host}/tls/none:v1", options=RegistryOptions(retries=0))


def test_registry_certificate_and_skip_verify(tls_registry, busybox_image):
    host, ca = tls_registry
    trusted = RegistryOptions(certificates=((host, str(ca)),))
    source = fetch_image(busybox_image)
    digest = push_image(source, [f"{host}/tls/app:v1"], options=trusted)
    assert fetch_image(f"{host}/tls/app:v1", options=trusted).digest == digest
    skipping = RegistryOptions(skip_tls_verify=True)
    assert fetch_image(f"{host}/tls/app:v1", options=skipping).digest == digest


def test_cli_registry_certificate_flag(tls_registry, busybox_image, tmp_path):
    host, ca = tls_registry
    push_image(fetch_image(busybox_image), [f"{host}/tls/cli:v1"],
               options=RegistryOptions(certificates=((host, str(ca)),)))
    proc = subprocess.run([sys.executable, "-m", "pybuildless", "pull", f"{host}/tls/cli:v1", str(tmp_path / "o"),
                           "--registry-certificate", f"{host}={ca}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "index.json").exists()
    proc = subprocess.run([sys.executable, "-m", "pybuildless", "pull", f"{host}/tls/cli:v1", str(tmp_path / "p"),
                           "--retries", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--registry-certificate" in proc.stderr


# Runs in a fresh process (the roots are read once per process) and counts every open or listing
# of a path in SSL_CERT_DIR through an audit hook, then pushes, pulls and fetches ``argv[1]`` and
# copies it to ``argv[2]`` with default options (no --insecure: a loopback host is probed).
_COUNT_CA_READS = """
import os, sys
watched = os.environ["SSL_CERT_DIR"]
reads = []
sys.addaudithook(lambda event, args: reads.append(args[0]) if event in ("open", "os.listdir", "os.scandir")
                 and args and str(args[0]).startswith(watched) else None)
from pybuildless.registry.remote import fetch_image, pull_image, push_image
image = fetch_image(sys.argv[1])
pull_image(sys.argv[1], sys.argv[3])
push_image(image, [sys.argv[2]])
print(len(reads), len(set(map(str, reads))))
"""


def _ca_reads(source: str, dest: str, cert_dir, blobs) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"} | {"SSL_CERT_DIR": str(cert_dir)}
    proc = subprocess.run([sys.executable, "-c", _COUNT_CA_READS, source, dest, str(blobs)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    reads, files = proc.stdout.split()
    return int(reads), int(files)


def test_plain_http_loopback_never_reads_the_ca_directory(tls_registry, busybox_image, registry, tmp_path):
    host, ca = tls_registry
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    (cert_dir / "registry-ca.crt").write_bytes(ca.read_bytes())
    for n in range(3):
        (cert_dir / f"other-{n}.crt").write_text("not a certificate\n")
    # plain HTTP loopback registry to itself: the directory is never listed nor any file in it opened
    assert _ca_reads(busybox_image, registry.ref("noca/copy:v1"), cert_dir, tmp_path / "a") == (0, 0)
    # the control: the same program sending the image to the HTTPS registry reads the directory
    # (once, for the whole process) and trusts the CA found there
    reads, files = _ca_reads(busybox_image, f"{host}/noca/copy:v1", cert_dir, tmp_path / "b")
    assert files == 5 and reads == 5  # the listing and its four files, each once


def test_a_tls_hello_tells_a_plain_http_server_from_a_tls_one(tls_registry, registry) -> None:
    from pybuildless.registry.trust import answers_plain_http

    host, _ca = tls_registry
    assert answers_plain_http(registry.host, 5.0)  # docker-registry without TLS answers "HTTP/1.1 400"
    assert not answers_plain_http(host, 5.0)  # the TLS one answers with a ServerHello
    assert not answers_plain_http(f"127.0.0.1:{free_port()}", 5.0)  # nobody there: HTTPS is tried as before
