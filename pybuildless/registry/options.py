"""RegistryOptions: the registry flags of the executor as one frozen value."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pybuildless.errors import UsageError
from pybuildless.name import DOCKER_HUB, Reference, normalise_registry

if TYPE_CHECKING:
    from pybuildless.registry.credentials import Keychain


@dataclass(frozen=True)
class RegistryOptions:
    insecure_registries: tuple[str, ...] = ()  # plain HTTP for these hosts
    insecure: bool = False  # plain HTTP for every registry (kaniko --insecure)
    insecure_pull: bool = False  # plain HTTP for pulls only
    skip_tls_verify: bool = False
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
        """Plain HTTP was asked for this host (loopback hosts fall back to it by themselves)."""
        host = normalise_registry(host)
        if self.insecure or (pull and self.insecure_pull):
            return True
        if host in {normalise_registry(h) for h in self.insecure_registries}:
            return True
        # a mirror given as http://host[/prefix] asks for plain HTTP to that host
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


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
