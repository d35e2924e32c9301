"""Which CA certificates a registry connection trusts, found the way Kaniko finds them.

Kaniko is a Go program: its roots are Go's crypto/x509 system pool, which on Linux reads the
first readable file of ``SSL_CERT_FILE`` (or a list of distribution bundles) and then **every
file** in each ``SSL_CERT_DIR`` directory (colon-separated), skipping symlinks to names in the
same directory (golang/go src/crypto/x509/root_unix.go, loadSystemRoots and
readUniqueDirectoryEntries). Kaniko's image sets ``SSL_CERT_DIR=/kaniko/ssl/certs``
(GoogleContainerTools/kaniko deploy/Dockerfile @ 236ba56), so a bundle appended as
``/kaniko/ssl/certs/additional-ca-cert-bundle.crt``, as GitLab's guide for Kaniko has it, or a
ConfigMap mounted over that directory, is trusted with no flag.

OpenSSL reads ``SSL_CERT_DIR`` differently (only ``<subject-hash>.0`` names), and ``requests``
defaults to certifi's bundle, so neither sees such a file: when ``SSL_CERT_DIR`` is set, the
connection gets a context holding exactly Go's set instead (also when only ``SSL_CERT_FILE`` is
set, with Go's default directories). With neither variable set nothing changes.

Reading the set is costly (hundreds of files on a Debian host), so it is done on the first HTTPS
request of a process, never for plain HTTP, and kept while the variables and the files' directory
entries stay the same: Go also loads its pool once per process (crypto/x509 root.go, ``once``).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from requests.adapters import BaseAdapter, HTTPAdapter

CERT_FILE_ENV = "SSL_CERT_FILE"
CERT_DIR_ENV = "SSL_CERT_DIR"
# Go's certFiles for Linux (src/crypto/x509/root_linux.go), tried in order until one is readable.
GO_CERT_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
# Go's certDirectories for Linux (src/crypto/x509/root_linux.go), when SSL_CERT_DIR is unset.
GO_CERT_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)


def _pem_certificates(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("ascii", errors="replace")
    except OSError:
        return []  # as Go: an unreadable entry is passed over
    return PEM_CERTIFICATE.findall(text)


def _directory_entries(directory: Path) -> list[Path]:
    """Entries of ``directory`` minus symlinks to a name in the same directory (c_rehash's
    ``<hash>.0`` links), which would only repeat a file already read."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        path = directory / name
        if path.is_symlink() and "/" not in os.readlink(path):
            continue
        out.append(path)
    return out


def go_root_certificates(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The PEM certificates Go would trust, or None when neither ``SSL_CERT_FILE`` nor
    ``SSL_CERT_DIR`` is set (the default verification then applies)."""
    env = os.environ if environ is None else environ
    if not env.get(CERT_DIR_ENV) and not env.get(CERT_FILE_ENV):
        return None
    dirs = env.get(CERT_DIR_ENV) or ":".join(GO_CERT_DIRS)
    files = (env[CERT_FILE_ENV],) if env.get(CERT_FILE_ENV) else GO_CERT_FILES
    certificates: list[str] = []
    for file in files:
        path = Path(file)
        if path.is_file() and os.access(path, os.R_OK):
            certificates += _pem_certificates(path)
            break
    else:
        import certifi  # requests' own default, when no system bundle exists

        certificates += _pem_certificates(Path(certifi.where()))
    for directory in dirs.split(":"):
        if directory:
            for entry in _directory_entries(Path(directory)):
                if entry.is_file():
                    certificates += _pem_certificates(entry)
    return certificates


def trust_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | None:
    """A verifying context holding Go's root set, or None when neither variable is set."""
    certificates = go_root_certificates(environ)
    if certificates is None:
        return None
    # PROTOCOL_TLS_CLIENT verifies chains and host names, and holds no roots yet: Go's set only.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for pem in certificates:
        try:
            context.load_verify_locations(cadata=pem)
        except ssl.SSLError:
            continue  # as AppendCertsFromPEM: a block that does not parse is skipped
    return context


class TrustingAdapter(HTTPAdapter):
    """An adapter whose verified connections use ``context`` instead of certifi's bundle."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        if verify is not False:
            # requests names certifi's bundle (or the host's CA file) here; the context already
            # holds the roots (and that file: ``with_registry_ca``).
            conn.ca_certs = None
            conn.ca_cert_dir = None


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


_SHARED: dict[tuple, ssl.SSLContext | None] = {}
_SHARED_LOCK = threading.Lock()


def shared_trust_context() -> ssl.SSLContext | None:
    """``trust_context()`` read once per process, again only when a variable changes or a file is
    added to, removed from or rewritten in the places it names (their stat stamps are the key)."""
    file, dirs = os.environ.get(CERT_FILE_ENV, ""), os.environ.get(CERT_DIR_ENV, "")
    places = [file] if file else list(GO_CERT_FILES)
    places += [d for d in (dirs or ":".join(GO_CERT_DIRS)).split(":") if d]
    key = (file, dirs, tuple(_stamp(p) for p in places))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED.clear()  # one set at a time: an old one is never asked for again
            _SHARED[key] = trust_context()
        return _SHARED[key]


_WITH_CA: dict[tuple, ssl.SSLContext] = {}


def with_registry_ca(path: str) -> ssl.SSLContext:
    """The system roots (Go's set when SSL_CERT_DIR or SSL_CERT_FILE is set, else the bundle
    requests uses) plus ``path``, as Kaniko's --registry-certificate appends the file to its pool
    (pkg/util/transport_util.go at 236ba5690eda9170d0157aa8137ebbeb09d38685, MakeTransport): the
    system roots still verify a token realm or redirect target elsewhere. Built once per file."""
    key = (os.environ.get(CERT_FILE_ENV, ""), os.environ.get(CERT_DIR_ENV, ""), path, _stamp(path))
    with _SHARED_LOCK:
        context = _WITH_CA.get(key)
    if context is None:
        from requests.utils import DEFAULT_CA_BUNDLE_PATH

        from pybuildless.errors import UsageError

        context = trust_context() or ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH)
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as e:  # as Kaniko: "failed to load certificate"
            raise UsageError(f"--registry-certificate {path}: cannot load it as PEM certificates "
                             f"({getattr(e, 'strerror', None) or e})") from None
        with _SHARED_LOCK:
            context = _WITH_CA.setdefault(key, context)
    return context


class LazyTrustingAdapter(BaseAdapter):
    """The adapter for ``https://``: reads the roots on its first request, not when a session is
    made, so a process that only speaks plain HTTP (a loopback registry) never reads them.
    ``registry_ca``: a --registry-certificate file trusted besides them."""

    def __init__(self, registry_ca: str | None = None, **pool_kwargs: Any) -> None:
        super().__init__()
        self._registry_ca = registry_ca
        self._pool_kwargs = pool_kwargs
        self._inner: HTTPAdapter | None = None
        self._lock = threading.Lock()

    def _adapter(self) -> HTTPAdapter:
        with self._lock:
            if self._inner is None:
                context = (shared_trust_context() if self._registry_ca is None
                           else with_registry_ca(self._registry_ca))
                self._inner = (TrustingAdapter(context, **self._pool_kwargs) if context is not None
                               else HTTPAdapter(**self._pool_kwargs))
            return self._inner

    def send(self, request: Any, **kwargs: Any) -> Any:
        return self._adapter().send(request, **kwargs)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def https_adapter(verify: bool | str, **pool_kwargs: Any) -> BaseAdapter:
    """The ``https://`` adapter for a connection that verifies with ``verify``: Go's roots when
    ``SSL_CERT_DIR`` or ``SSL_CERT_FILE`` is set and no CA bundle was named for the host."""
    if isinstance(verify, str):  # --registry-certificate: besides the system roots, not instead
        return LazyTrustingAdapter(verify, **pool_kwargs)
    if verify is True and (os.environ.get(CERT_DIR_ENV) or os.environ.get(CERT_FILE_ENV)):
        return LazyTrustingAdapter(**pool_kwargs)
    return HTTPAdapter(**pool_kwargs)


def answers_plain_http(address: str, timeout: float) -> bool:
    """Whether ``host[:port]`` answers a TLS ClientHello with an HTTP response, i.e. is a plain-HTTP
    server (a TLS server answers with a ServerHello or an alert, never with ``HTTP/``). The hello
    is made with a context that holds no roots: telling the two apart needs none. False when the
    host cannot be reached or the answer is anything else: the caller then tries HTTPS as usual."""
    parts = urlsplit(f"https://{address}")
    try:
        host, port = parts.hostname, parts.port or 443
        sock = socket.create_connection((host, port), timeout=timeout)
    except (OSError, ValueError):
        return False
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass  # the hello is written; the answer is read below, by hand
        sock.sendall(outgoing.read())
        answer = b""
        while len(answer) < 5:
            chunk = sock.recv(5 - len(answer))
            if not chunk:
                break
            answer += chunk
        return answer == b"HTTP/"
    except (OSError, ssl.SSLError):
        return False
    finally:
        sock.close()
