"""Token realm hardening (ggcr #2243 and follow-ups): no plain-HTTP realm for an HTTPS
registry, no private-address realm for a public registry."""

from __future__ import annotations

import pytest

from pybuildless.errors import AuthError, RegistryError
from pybuildless.registry.tokens import _check_realm
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.transport import PingResult, Transport


class FakeTransport(Transport):
    """A transport whose ping result is given (no network)."""

    def __init__(self, registry: str, scheme: str) -> None:
        super().__init__(registry, RegistryOptions())
        self._ping = PingResult(scheme, None)


@pytest.mark.parametrize("registry,scheme,realm", [
    ("reg.example", "https", "https://auth.example/token"),
    ("127.0.0.1:5000", "http", "http://127.0.0.1:5001/token"),
    ("localhost:5000", "http", "http://127.0.0.1:9/token"),
    ("reg.example:5000", "http", "http://10.0.0.5/token"),  # an insecure registry may use a local realm
])
def test_acceptable_realms(registry, scheme, realm):
    _check_realm(FakeTransport(registry, scheme), realm)


@pytest.mark.parametrize("registry,scheme,realm,reason", [
    ("reg.example", "https", "http://auth.example/token", "plain-HTTP"),
    ("reg.example", "https", "https://127.0.0.1/token", "private address"),
    ("reg.example", "https", "https://169.254.169.254/latest", "private address"),
    ("reg.example", "https", "https://10.1.2.3/token", "private address"),
    ("reg.example", "https", "file:///etc/passwd", "invalid token realm"),
    ("reg.example", "https", "", "invalid token realm"),
])
def test_rejected_realms(registry, scheme, realm, reason):
    with pytest.raises(AuthError, match=reason):
        _check_realm(FakeTransport(registry, scheme), realm)


@pytest.mark.parametrize("registry,scheme,url,allowed", [
    ("reg.example", "https", "https://storage.example/blob?sig=1", True),
    ("reg.example", "https", "https://10.0.0.1/blob", False),
    ("reg.example", "https", "http://169.254.169.254/latest/meta-data", False),
    ("reg.example", "https", "https://localhost/x", False),
    ("127.0.0.1:5000", "http", "http://127.0.0.1:5001/x", True),
    ("10.0.0.7:5000", "http", "http://10.0.0.8/x", True),
])
def test_redirects_and_upload_locations_to_private_addresses(registry, scheme, url, allowed):
    transport = FakeTransport(registry, scheme)
    if allowed:
        transport.check_foreign_host(url, "redirect")
    else:
        with pytest.raises(RegistryError, match="refusing redirect on a private address"):
            transport.check_foreign_host(url, "redirect")
