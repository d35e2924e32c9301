"""Bearer token exchange (distribution token.md / oauth.md) and the per-scope cache.

GET ``<realm>?service=&scope=&scope=`` with Basic credentials (to the realm
only), or anonymous; POST (OAuth2, form-encoded) when holding an identity
token, falling back to GET on 404. ``expires_in`` defaults to and is clamped
at no less than 60 s; tokens are refreshed 10% early.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable
from urllib.parse import urlencode, urlsplit

import requests

from pybuildless import log
from pybuildless.errors import AuthError
from pybuildless.registry.challenge import Challenge
from pybuildless.registry.credentials import Credential

# How the token exchange reaches the realm: ``send(method, url, *, auth, data=None)`` returns a
# streamed response, retried on temporary failures, and refuses a host the registry may not send
# us to (``Transport.token_request``). The fetcher needs nothing else from the connection.
Send = Callable[..., requests.Response]

logger = logging.getLogger(__name__)

MIN_EXPIRY = 60
MAX_TOKEN_RESPONSE = 64 * 1024
CLIENT_ID = "pybuildless"


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    expires_at: float  # monotonic clock

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.expires_at


class TokenCache:
    """Tokens keyed by (realm, service, frozenset(scopes)); thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[Hashable, Token] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Token | None:
        with self._lock:
            token = self._tokens.get(key)
            return token if token is not None and token.fresh() else None

    def put(self, key: Hashable, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token


def check_realm(realm: str, *, registry: str, plain_http: bool) -> None:
    """Realm SSRF hardening: an http(s) URL, and plain HTTP only when the registry itself is plain HTTP.
    (The realm's host is checked by ``send``, as for redirects and upload Locations.)"""
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AuthError(f"{registry}: invalid token realm {log.redact(realm)!r}")
    if parts.scheme == "http" and not plain_http:
        raise AuthError(f"{registry}: refusing plain-HTTP token realm for an HTTPS registry")


def fetch_token(send: Send, challenge: Challenge, scopes: tuple[str, ...], cred: Credential, *,
                registry: str, plain_http: bool) -> Token:
    """A token for ``scopes`` from the challenge's realm; ``registry`` names the registry in messages."""
    realm = challenge.realm
    check_realm(realm, registry=registry, plain_http=plain_http)
    received = time.monotonic()
    resp = None
    if cred.identity_token:
        resp = _post_oauth(send, realm, challenge.service, scopes, cred)
        if resp.status_code == 404:  # "Not all token servers implement oauth2"
            resp.close()
            resp = None
    if resp is None:
        resp = _get_token(send, realm, challenge.service, scopes, cred)
    try:
        if resp.status_code in (401, 403):
            who = (f"user {cred.username!r}" if cred.username
                   else "the identity token from the Docker config" if cred.identity_token else "anonymous access")
            raise AuthError(
                f"{registry}: token server refused {who} for {' '.join(scopes) or 'the registry'}"
                f" (HTTP {resp.status_code})",
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise AuthError(
                f"{registry}: token server answered HTTP {resp.status_code}",
                status=resp.status_code,
                temporary=resp.status_code >= 500 or resp.status_code == 429,
            )
        body = resp.raw.read(MAX_TOKEN_RESPONSE + 1, decode_content=True)
    finally:
        resp.close()
    if len(body) > MAX_TOKEN_RESPONSE:
        raise AuthError(f"{registry}: token response larger than 64 KiB")
    try:
        doc = json.loads(body)
        value = doc.get("access_token") or doc.get("token")
    except (ValueError, AttributeError):
        value = None
    if not value or not isinstance(value, str):
        raise AuthError(f"{registry}: token server returned no token")
    log.register_secret(value)
    if isinstance(doc.get("refresh_token"), str):
        log.register_secret(doc["refresh_token"])
    try:
        expires_in = max(MIN_EXPIRY, int(doc.get("expires_in") or MIN_EXPIRY))
    except (TypeError, ValueError):
        expires_in = MIN_EXPIRY
    logger.debug("token for %s (%s) valid %ds", registry, " ".join(scopes) or "-", expires_in)
    return Token(value, received + expires_in * 0.9)


def _get_token(send: Send, realm: str, service: str, scopes: tuple[str, ...], cred: Credential):
    params = [("service", service)] if service else []
    params += [("scope", s) for s in scopes]
    auth = None
    if cred.username and cred.password:
        params.append(("account", cred.username))
        auth = requests.auth._basic_auth_str(cred.username, cred.password)
    sep = "&" if urlsplit(realm).query else "?"
    url = realm + (sep + urlencode(params) if params else "")
    return send("GET", url, auth=auth)


def _post_oauth(send: Send, realm: str, service: str, scopes: tuple[str, ...], cred: Credential):
    form = {
        "grant_type": "refresh_token",
        "refresh_token": cred.identity_token,
        "service": service,
        "client_id": CLIENT_ID,
        "scope": " ".join(scopes),  # one space-separated field in the OAuth2 form
    }
    return send("POST", realm, auth=None, data=form)
