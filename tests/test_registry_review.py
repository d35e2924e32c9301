"""Where a registry's tokens may go: a token able to push never travels over plain HTTP.

``--insecure-pull`` lets pulls fall back to plain HTTP while pushes keep verified HTTPS (Kaniko's
pkg/image/remote/remote.go at 236ba5690eda9170d0157aa8137ebbeb09d38685 makes only the pulled
reference ``name.Insecure``, whose ping tries HTTPS first; each of Kaniko's pulls and pushes
authenticates on its own transport). A registry that answers HTTPS is never left for plain HTTP. A bearer token is a
bearer credential (RFC 6750 §5.3: "Always use TLS (https)"): whoever reads one off the wire
acts with its scopes until it expires. So the pull transport may send, in clear, only tokens it
asked for with the pull scopes it needs, never the push transport's (asked for push on the
destinations, fetched over HTTPS).

The registry here is a real docker-registry behind one loopback port that speaks both TLS
(terminated with a test certificate) and plain HTTP, as a registry reachable both ways is; its
token realm is HTTPS. What goes over the plain-HTTP connections is recorded and the bearer
tokens in it are read (the issuer's JWT ``access`` claim says what each one grants).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
import select
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pybuildless.name import parse_reference
from pybuildless.registry import ahead
from pybuildless.registry.credentials import Credential, StaticKeychain
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, push_image
from tests.fixtures.registry import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    TOKEN_ISSUER,
    TOKEN_SERVICE,
    _config_yaml,
    _stop_process,
    _wait_until_up,
    free_port,
)
from tests.fixtures.tokenissuer import TokenIssuer

pytestmark = pytest.mark.slow


def _loopback_certificate(workdir: Path, common_name: str = "pybuildless review registry") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "front.pem", workdir / "front.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class DualFront:
    """A loopback port answering TLS (terminated here) and plain HTTP alike, both forwarded to a
    plain-HTTP backend; the bytes clients send in plain HTTP are kept in ``plain``."""

    def __init__(self, backend_port: int, context: ssl.SSLContext) -> None:
        self.backend_port, self.context = backend_port, context
        self.plain = bytearray()
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = conn.recv(1, socket.MSG_PEEK) == b"\x16"  # a TLS handshake record
            if tls:
                conn = self.context.wrap_socket(conn, server_side=True)
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
        except (OSError, ssl.SSLError):
            conn.close()
            return
        try:  # one thread per connection: an SSL object is not to be read and written at once
            while True:
                pending = tls and conn.pending()
                ready = [conn] if pending else select.select([conn, backend], [], [], 60)[0]
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is conn and not tls:
                        with self._lock:
                            self.plain.extend(data)
                    (backend if s is conn else conn).sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()
            backend.close()

    def plain_bearer_grants(self) -> list[list[dict]]:
        """The ``access`` claim of every bearer token sent in plain HTTP."""
        with self._lock:
            text = bytes(self.plain).decode("latin-1")
        grants = []
        for token in re.findall(r"(?im)^Authorization:\s*Bearer\s+(\S+)\r?$", text):
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            grants.append(claims.get("access") or [])
        return grants

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def dual_registry(tmp_path):
    """(host through the dual front, CA path, issuer, front) of a token-auth docker-registry
    whose realm is HTTPS."""
    yield from _dual_registry(tmp_path, relative_urls=True)


@pytest.fixture
def dual_registry_http_locations(tmp_path):
    """The same registry unaware of the TLS in front of it (no X-Forwarded-Proto, no
    relativeurls): its upload Locations say http:// whichever way the client came."""
    yield from _dual_registry(tmp_path, relative_urls=False)


@pytest.fixture
def realm_with_its_own_ca(tmp_path):
    """The registry's certificate and its token realm's come from different CAs (a private
    registry whose realm is a service signed by a public CA): the realm's CA is at
    ``tmp_path/realm/front.pem``."""
    yield from _dual_registry(tmp_path, relative_urls=True, realm_cert_dir=tmp_path / "realm")


def _dual_registry(tmp_path, *, relative_urls: bool, realm_cert_dir: Path | None = None):
    cert, key = _loopback_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    realm_context = context
    if realm_cert_dir is not None:
        realm_cert_dir.mkdir()
        realm_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        realm_context.load_cert_chain(*_loopback_certificate(realm_cert_dir, "pybuildless review realm"))
    issuer = TokenIssuer(tmp_path / "issuer", users={DEFAULT_USERNAME: DEFAULT_PASSWORD},
                         service=TOKEN_SERVICE, issuer=TOKEN_ISSUER)
    issuer.start()
    issuer_port = int(issuer.realm.rsplit(":", 1)[1].split("/")[0])
    issuer_front = DualFront(issuer_port, realm_context)
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    auth = ("auth:\n  token:\n"
            f"    realm: https://127.0.0.1:{issuer_front.port}/token\n"
            f"    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n"
            f"    rootcertbundle: {issuer.cert_path}\n")
    # relative upload Locations: the registry cannot tell which of the front's two ways a client used
    config = _config_yaml(data, port, "") + auth
    if relative_urls:
        config = config.replace("  secret:", "  relativeurls: true\n  secret:")
    (tmp_path / "config.yml").write_text(config)
    log_path = tmp_path / "registry.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "config.yml")],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    front = DualFront(port, context)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", proc, log_path)
        yield f"127.0.0.1:{front.port}", str(cert), issuer, front
    finally:
        front.close()
        issuer_front.close()
        _stop_process(proc)
        issuer.stop()


def _options(host: str, cert: str, **flags) -> RegistryOptions:
    cred = Credential(username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    return RegistryOptions(certificates=((host, cert),), keychain=StaticKeychain(((host, cred),)), **flags)


def test_insecure_pull_sends_no_push_token_in_plain_http(dual_registry, busybox_image):
    host, cert, issuer, front = dual_registry
    push_image(fetch_image(busybox_image), [f"{host}/review/base:1"], options=_options(host, cert))
    plain_before = len(front.plain)
    assert front.plain_bearer_grants() == []  # the seeding push went over HTTPS

    options = _options(host, cert, insecure_pull=True)
    dest = parse_reference(f"{host}/review/dest:1")
    ahead.begin(options, [dest])  # announces push on the destination, as a build does
    try:
        base = fetch_image(f"{host}/review/base:1", options=options)
        assert push_image(base, [dest], options=options) == base.digest
    finally:
        ahead.end(options)

    # HTTPS first (go-containerregistry transport/ping.go): the registry answers it, so the
    # insecure pull sends nothing in clear, tokens least of all
    assert len(front.plain) == plain_before, bytes(front.plain[plain_before:])[:300]
    grants = front.plain_bearer_grants()
    assert grants == []
    pushers = [g for g in grants if any("push" in entry["actions"] for entry in g)]
    assert pushers == [], f"tokens granting push sent in plain HTTP: {pushers}"


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="builds need root (chroot)")
def test_build_with_insecure_pull_sends_no_push_token_in_plain_http(dual_registry, busybox_image, tmp_path):
    """The same through the executor: the permission check announces the destination, the FROM
    lookup (insecure: HTTPS first) and the push both stay on HTTPS."""
    from tests.buildkit import executor, write_context

    host, cert, issuer, front = dual_registry
    push_image(fetch_image(busybox_image), [f"{host}/review/base:1"], options=_options(host, cert))
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(f"{DEFAULT_USERNAME}:{DEFAULT_PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {host}/review/base:1\nCOPY f /f\n", "f": "file\n"})
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", f"{host}/review/app:1",
             "--insecure-pull", "--registry-certificate", f"{host}={cert}", cwd=tmp_path,
             env={"DOCKER_CONFIG": str(config), "XDG_CACHE_HOME": str(tmp_path / "cache")})

    assert bytes(front.plain) == b"", bytes(front.plain)[:300]
    grants = front.plain_bearer_grants()
    pushers = [g for g in grants if any("push" in entry["actions"] for entry in g)]
    assert pushers == [], f"tokens granting push sent in plain HTTP: {pushers}"
    pushed = fetch_image(f"{host}/review/app:1", options=_options(host, cert))
    assert len(list(pushed.layers())) == 2


def test_upload_location_in_plain_http_on_an_https_registry_gets_no_token(dual_registry_http_locations,
                                                                         busybox_image):
    """A registry behind a TLS proxy that does not pass X-Forwarded-Proto answers upload
    Locations ``http://<its host>/...`` (distribution builds them from the request it saw). The
    token of an HTTPS registry is not sent there in clear: Docker's client keys its auth
    challenges by scheme and host, so it sends none either (and nginx recipes for a registry set
    X-Forwarded-Proto for that reason)."""
    from pybuildless.errors import RegistryError

    host, cert, issuer, front = dual_registry_http_locations
    try:
        push_image(fetch_image(busybox_image), [f"{host}/review/located:1"], options=_options(host, cert))
    except RegistryError:
        pass  # refusing the push is fine; sending the token in clear is not
    grants = front.plain_bearer_grants()
    assert grants == [], f"tokens sent in plain HTTP to an upload Location: {grants}"


def test_registry_certificate_adds_to_the_system_roots(realm_with_its_own_ca, busybox_image, tmp_path,
                                                       monkeypatch):
    """Kaniko's --registry-certificate appends the file to the system pool for that registry
    (pkg/util/transport_util.go at 236ba5690eda9170d0157aa8137ebbeb09d38685, MakeTransport:
    ``systemCertLoader.append(certificatePath)``, then ``RootCAs: systemCertLoader.value()``):
    the registry's own CA is trusted besides the system roots, which still verify its token
    realm elsewhere. The system roots here: SSL_CERT_FILE naming the realm's CA (read the way
    Go reads it, registry/trust.py)."""
    host, cert, issuer, front = realm_with_its_own_ca
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "realm" / "front.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    options = _options(host, cert)
    push_image(fetch_image(busybox_image), [f"{host}/review/roots:1"], options=options)
    assert fetch_image(f"{host}/review/roots:1", options=options).digest
    assert [user for _, user, _, _ in issuer.requests] and all(u == DEFAULT_USERNAME for _, u, _, _ in issuer.requests)


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="builds need root (chroot)")
@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_unloadable_registry_certificate_is_one_error_naming_the_flag(dual_registry, tmp_path, content):
    from tests.buildkit import executor, write_context

    host, cert, issuer, front = dual_registry
    bad = tmp_path / "bad.pem"
    if content is not None:
        bad.write_text(content)
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {host}/review/missing:1\n"})
    proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--no-push",
                    "--registry-certificate", f"{host}={bad}", cwd=tmp_path, check=False,
                    env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"--registry-certificate {bad}: cannot load it" in err
    assert "Traceback" not in err
