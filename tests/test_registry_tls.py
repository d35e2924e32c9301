"""A TLS registry with its own CA: trusted through --registry-certificate or skipped
verification; an untrusted certificate is reported as such (never silently downgraded)."""

from __future__ import annotations

import datetime as dt
import ipaddress
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
