"""Token realm hardening (ggcr #2243 and follow-ups): no plain-HTTP realm for an HTTPS
registry, no private-address realm for a public registry."""

from __future__ import annotations

import pytest

from pybuildless.errors import AuthError
from pybuildless.registry.tokens import _check_realm
from pybuildless.registry.transport import PingResult


class FakeTransport:
    def __init__(self, registry: str, scheme: str) -> None:
        self.registry = registry
        self._scheme = scheme

    def ping(self) -> PingResult:
        return PingResult(self._scheme, None)


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
