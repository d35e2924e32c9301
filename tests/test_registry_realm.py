"""Token realm hardening (ggcr #2243 and follow-ups): no plain-HTTP realm for an HTTPS
registry, no private-address realm for a public registry."""

from __future__ import annotations

import re

import pytest

from pybuildless.errors import AuthError, RegistryError
from pybuildless.registry.challenge import Challenge
from pybuildless.registry.credentials import Credential
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.tokens import fetch_token
from pybuildless.registry.transport import PingResult, Transport


class Sent(Exception):
    """The request passed every check and would have gone on the wire."""


class FakeTransport(Transport):
    """A transport whose ping result is given and that sends nothing."""

    def __init__(self, registry: str, scheme: str) -> None:
        super().__init__(registry, RegistryOptions())
        self._ping = PingResult(scheme, None)

    def _send(self, method: str, url: str, **kwargs) -> None:
        raise Sent(url)


def fetch_from_realm(registry: str, scheme: str, realm: str) -> None:
    """Ask for a token as the transport does, from a challenge naming ``realm``."""
    transport = FakeTransport(registry, scheme)
    fetch_token(transport.token_request, Challenge("bearer", (("realm", realm),)), ("repository:a:pull",),
                Credential(), registry=registry, plain_http=transport.ping_scheme == "http")


@pytest.mark.parametrize("registry,scheme,realm", [
    ("reg.example", "https", "https://auth.example/token"),
    ("127.0.0.1:5000", "http", "http://127.0.0.1:5001/token"),
    ("localhost:5000", "http", "http://127.0.0.1:9/token"),
    ("reg.example:5000", "http", "http://10.0.0.5/token"),  # an insecure registry may use a local realm
])
def test_acceptable_realms(registry, scheme, realm):
    with pytest.raises(Sent, match="^" + re.escape(realm) + r"\?scope="):
        fetch_from_realm(registry, scheme, realm)


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
        fetch_from_realm(registry, scheme, realm)


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
