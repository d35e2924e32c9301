"""Bearer token flow against the token-auth registry: GET with Basic, OAuth2 POST with an
identity token, ready registry tokens, per-scope caching and the 401 re-scope path."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest

import pybuildless.registry.tokens as tokens_module
from pybuildless.errors import AuthError
from pybuildless.registry.credentials import Credential, StaticKeychain
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, push_image
from pybuildless.registry.tokens import Token, TokenCache
from pybuildless.registry.transport import Transport

pytestmark = pytest.mark.slow


def issuer_token(server, scopes: list[str], *, offline: bool = False) -> dict:
    query = "&".join(["service=pybuildless-test-registry"] + [f"scope={s}" for s in scopes])
    if offline:
        query += "&offline_token=true&client_id=tests"
    req = urllib.request.Request(f"{server.token_realm}?{query}")
    basic = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def keychain(server, **cred) -> RegistryOptions:
    return RegistryOptions(keychain=StaticKeychain(((server.host, Credential(**cred)),)))


@pytest.fixture
def seeded(registry_token, busybox_image):
    """busybox pushed to the token registry (with username/password)."""
    ref = registry_token.ref("tokens/seed:v1")
    push_image(fetch_image(busybox_image), [ref],
               options=keychain(registry_token, username=registry_token.username, password=registry_token.password))
    return ref


def test_identity_token_uses_oauth2_refresh(registry_token, seeded, busybox_image):
    refresh = issuer_token(registry_token, [], offline=True)["refresh_token"]
    options = keychain(registry_token, identity_token=refresh)
    # push needs real (non-anonymous) access: only a working refresh-token exchange gives it
    digest = push_image(fetch_image(seeded, options=options), [registry_token.ref("tokens/by-identity:v1")],
                        options=options)
    assert fetch_image(registry_token.ref("tokens/by-identity:v1"), options=options).digest == digest


def test_ready_registry_token_is_used_as_bearer(registry_token, seeded):
    token = issuer_token(registry_token, ["repository:tokens/seed:pull"])["token"]
    image = fetch_image(seeded, options=keychain(registry_token, registry_token=token))
    assert image.layers()


def test_tokens_are_cached_per_scope_set(registry_token, seeded, monkeypatch):
    calls = []
    real = tokens_module.fetch_token

    def counting(send, challenge, scopes, cred, **where):
        calls.append(tuple(scopes))
        return real(send, challenge, scopes, cred, **where)

    monkeypatch.setattr(tokens_module, "fetch_token", counting)
    options = keychain(registry_token, username=registry_token.username, password=registry_token.password)
    t = Transport(registry_token.host, options)
    for _ in range(3):
        t.request("HEAD", "/v2/tokens/seed/manifests/v1", scopes=("repository:tokens/seed:pull",),
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).close()
    assert calls == [("repository:tokens/seed:pull",)]
    t.request("HEAD", "/v2/tokens/seed/manifests/v1", scopes=("repository:tokens/seed:pull,push",),
              headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).close()
    assert calls[-1] == ("repository:tokens/seed:pull,push",) and len(calls) == 2


def test_a_401_naming_a_new_scope_gets_a_token_for_it(registry_token):
    """The catalog needs ``registry:catalog:*``; asking with no scope must re-authenticate once."""
    options = keychain(registry_token, username=registry_token.username, password=registry_token.password)
    t = Transport(registry_token.host, options)
    resp = t.request("GET", "/v2/_catalog", scopes=())
    with resp:
        assert "repositories" in resp.json()


def test_anonymous_and_wrong_password_fail_clearly(registry_token, seeded):
    with pytest.raises(AuthError):
        fetch_image(seeded, options=RegistryOptions(keychain=StaticKeychain(())))
    with pytest.raises(AuthError, match="token server refused user 'tester'") as info:
        fetch_image(seeded, options=keychain(registry_token, username="tester", password="not-the-password"))
    assert "not-the-password" not in str(info.value)


def test_token_cache_expiry():
    cache = TokenCache()
    scopes = ("repository:a:pull",)
    cache.put(("realm", "svc", frozenset(scopes)), Token("v", time.monotonic() - 1))
    assert cache.covering("realm", "svc", scopes) is None  # expired
    cache.put(("realm", "svc", frozenset(scopes)), Token("v", time.monotonic() + 60))
    assert cache.covering("realm", "svc", scopes).value == "v"
    assert cache.covering("realm", "other", scopes) is None
    assert "secret-value" not in repr(Token("secret-value", 0))
