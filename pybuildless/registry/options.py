"""RegistryOptions: the registry flags of the executor as one frozen value."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pybuildless.errors import UsageError
from pybuildless.name import DOCKER_HUB, Reference, normalise_registry

if TYPE_CHECKING:
    from pybuildless.registry.credentials import Keychain


@dataclass(frozen=True)
class RegistryOptions:
    # "Insecure" is go-containerregistry's name.Insecure: HTTPS first, plain HTTP if that fails.
    """How to reach registries: TLS, plain HTTP, mirrors, retries, credentials."""

    insecure_registries: tuple[str, ...] = ()  # these hosts, pulls and pushes
    insecure: bool = False  # pushes and layer-cache reads/writes (kaniko --insecure), not base pulls
    insecure_pull: bool = False  # pulls only
    skip_tls_verify: bool = False  # every registry, pulls included, as Kaniko's MakeTransport does
    skip_tls_verify_pull: bool = False
    skip_tls_verify_registries: tuple[str, ...] = ()
    certificates: tuple[tuple[str, str], ...] = ()  # (host, CA bundle path)
    client_certificates: tuple[tuple[str, str, str], ...] = ()  # (host, cert, key)
    registry_mirrors: tuple[str, ...] = ()  # Docker Hub only
    registry_map: tuple[tuple[str, str], ...] = ()  # (original host, mirror[/prefix])
    skip_default_registry_fallback: bool = False
    retries: int = 3  # extra attempts for temporary failures
    parallel: int = 4  # concurrent blob transfers
    upload_chunk_size: int = 16 << 20  # PATCH size when a registry refuses monolithic uploads
    timeout: tuple[float, float] = (30.0, 300.0)  # (connect, read)
    keychain: Keychain | None = field(default=None, compare=False)

    def get_keychain(self) -> Keychain:
        from pybuildless.registry.credentials import default_keychain  # read when a registry is reached

        return self.keychain if self.keychain is not None else default_keychain()

    def plain_http(self, host: str, *, pull: bool = False) -> bool:
        """The flags make ``host`` insecure: reached over HTTPS if it answers so, else plain HTTP.

        Kaniko v1.24.0 (GoogleContainerTools/kaniko 236ba5690eda, pkg/image/remote/remote.go,
        pkg/executor/push.go, pkg/cache/cache.go) marks a pulled registry insecure for
        ``--insecure-pull`` or ``--insecure-registry``, a pushed one (and the cache repo) for
        ``--insecure`` or ``--insecure-registry``. Hosts that are insecure without any flag
        (``defaults_to_http``) are the transport's business.
        """
        host = normalise_registry(host)
        if self.insecure_pull if pull else self.insecure:
            return True
        return host in {normalise_registry(h) for h in self.insecure_registries} or self.http_only(host)

    def http_only(self, host: str) -> bool:
        """A mirror given as ``http://host[/prefix]`` asks for plain HTTP to that host, never HTTPS."""
        host = normalise_registry(host)
        targets = list(self.registry_mirrors) + [mirror for _, mirror in self.registry_map]
        return any(t.strip().startswith("http://") and
                   normalise_registry(t.strip().removeprefix("http://").split("/", 1)[0]) == host for t in targets)

    def verify_tls(self, host: str, *, pull: bool = False) -> bool | str:
        """``requests``' ``verify`` for a host: False, a CA bundle path, or True."""
        host = normalise_registry(host)
        if self.skip_tls_verify or (pull and self.skip_tls_verify_pull):
            return False
        if host in {normalise_registry(h) for h in self.skip_tls_verify_registries}:
            return False
        for cert_host, path in self.certificates:
            if normalise_registry(cert_host) == host:
                return path
        return True

    def client_cert(self, host: str) -> tuple[str, str] | None:
        for cert_host, cert, key in self.client_certificates:
            if normalise_registry(cert_host) == normalise_registry(host):
                return (cert, key)
        return None

    def mirrors_for(self, ref: Reference) -> list[Reference]:
        """Mirror references to try, in order, before the original (pulls only).

        ``--registry-mirror`` applies to Docker Hub; ``--registry-map orig=mirror[/prefix]``
        to any registry, a prefix being prepended to the repository (``library/`` kept).
        """
        out: list[Reference] = []
        targets: list[str] = []
        if ref.registry == DOCKER_HUB:
            targets.extend(self.registry_mirrors)
        for orig, mirror in self.registry_map:
            if normalise_registry(orig) == ref.registry:
                targets.append(mirror)
        for target in targets:
            target = target.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
            host, _, prefix = target.partition("/")
            repository = f"{prefix}/{ref.repository}" if prefix else ref.repository
            out.append(ref.with_registry(normalise_registry(host), repository))
        return out


def defaults_to_http(host: str) -> bool:
    """go-containerregistry's ``Registry.Scheme()`` is "http" without any flag for these names
    (pkg/name/registry.go at 3f4ff3ca60f5): an IPv4 literal in 10/8, 172.16/12 or 192.168/16 (any
    port), ``localhost:PORT``, ``*.localhost[:PORT]``, ``127.0.0.1[:PORT]``, ``::1`` and
    ``[::1][:PORT]``. Not bare ``localhost``, not the rest of 127/8. Its ping then tries HTTPS
    first and plain HTTP after (pkg/v1/remote/transport/ping.go)."""
    ip_text = host.split(":")[0]
    try:
        ip = ipaddress.IPv4Address(ip_text)
    except ValueError:
        ip = None
    if ip is not None and any(ip in ipaddress.IPv4Network(net) for net in
                              ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")):
        return True
    if host.startswith("localhost:"):
        return True
    return bool(re.fullmatch(r".*\.localhost(?::\d{1,5})?", host)
                or re.fullmatch(r"127\.0\.0\.1(?::\d{1,5})?", host)
                or re.fullmatch(r"::1|\[::1\](?::\d{1,5})?", host))


def is_private_address(hostname: str) -> bool:
    """Loopback, private, link-local or unspecified IP literals, and localhost names."""
    name = hostname.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def parse_host_value_pairs(values: tuple[str, ...] | list[str], flag: str) -> tuple[tuple[str, str], ...]:
    """``host=value`` flag values (``--registry-certificate``, ``--registry-map``; ';' separates several)."""
    out = []
    for raw in values:
        for item in raw.split(";"):
            if not item.strip():
                continue
            host, sep, value = item.partition("=")
            if not sep or not host.strip() or not value.strip():
                raise UsageError(f"{flag}: expected HOST=VALUE, got {item!r}")
            out.append((host.strip(), value.strip()))
    return tuple(out)
