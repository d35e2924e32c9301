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
from pybuildless.registry.challenge import Challenge, covers, union_scopes
from pybuildless.registry.credentials import Credential

# How the token exchange reaches the realm: ``send(method, url, *, auth, data=None)`` returns a
# streamed response, retried on temporary failures, and refuses a host the registry may not send
# us to (``Transport.token_request``). The fetcher needs nothing else from the connection.
Send = Callable[..., requests.Response]

logger = logging.getLogger(__name__)

MIN_EXPIRY = 60
# Resources one token is asked for at most (the most recently needed first): a process that
# touched many repositories does not send ever longer token URLs (~60 bytes per scope).
MAX_SCOPES = 16
MAX_TOKEN_RESPONSE = 64 * 1024
CLIENT_ID = "pybuildless"


@dataclass(frozen=True)
class Token:
    """A bearer token and when it expires."""

    value: str = field(repr=False)
    expires_at: float  # monotonic clock

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.expires_at


class TokenCache:
    """Tokens keyed by (realm, service, frozenset(scopes asked for)); thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[Hashable, Token] = {}
        self._lock = threading.Lock()

    def put(self, key: Hashable, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def covering(self, realm: str, service: str, scopes: tuple[str, ...]) -> Token | None:
        """A fresh token of this realm and service asked for with at least ``scopes``: a token
        for pull on the base and push on the destination serves a pull of the base as well."""
        with self._lock:
            for (r, s, asked), token in self._tokens.items():
                if r == realm and s == service and token.fresh() and covers(asked, scopes):
                    return token
        return None

    def drop_covering(self, realm: str, service: str, scopes: tuple[str, ...]) -> None:
        """Forget the tokens that should have served ``scopes`` and did not (the registry said 401)."""
        with self._lock:
            for key in [k for k in self._tokens if k[0] == realm and k[1] == service and covers(k[2], scopes)]:
                del self._tokens[key]


class BuildTokens:
    """The tokens of one registry host, fetched so that few serve a whole build.

    Each token is asked for with every scope this host needed so far or was told to expect
    (distribution docs/content/spec/auth/token.md at 01b4555d59222ec9698cb1173b980cbbb1fb5289,
    "Requesting a Token": the ``scope`` parameter "should be specified multiple times if there
    is more than one"; a client granted only part of what it asked for "must not be considered
    an error"), and any token asked for with a superset of the scopes a request needs serves it:
    the push-permission check's token for the destination, widened by the FROM lookup with pull
    on the base, then serves the mounts, the uploads and the manifest PUT.

    Registry quirks, each handled by asking for the needed scopes alone from then on:
    - a token server that refuses a request naming several repositories (an error status);
    - one that grants only the first scope of a request (go-containerregistry's
      pkg/v1/remote/transport/bearer.go: "Some registries seem to only look at the first scope
      parameter during a token exchange"): seen as a 401 from the registry on a request the
      token was asked for; the newly needed scope is then put first (``union_scopes``).
    """

    def __init__(self) -> None:
        self._cache = TokenCache()
        self._lock = threading.Lock()
        self._expected: tuple[str, ...] = ()  # every scope asked for or announced (``expect``)
        self.multi_scope = True  # False once the token server refused or ignored a multi-scope request

    def expect(self, scopes) -> None:
        with self._lock:
            self._expected = union_scopes(scopes, self._expected)[:MAX_SCOPES]

    def get(self, challenge: Challenge, scopes: tuple[str, ...], cred: Credential, *, force: bool, send: Send,
            registry: str, plain_http: bool) -> Token:
        """A fresh token serving ``scopes``; ``force``: the registry refused the one that should have."""
        realm, service = challenge.realm, challenge.service
        token = None if force else self._cache.covering(realm, service, scopes)
        if token is not None:
            return token
        with self._lock:  # parallel uploads starting together need one token, not four
            if force:
                self._cache.drop_covering(realm, service, scopes)
                if self.multi_scope and covers(self._expected, scopes):
                    logger.debug("%s: a token asked for several scopes lacked %s; one scope set per token "
                                 "from now on", registry, " ".join(scopes))
                    self.multi_scope = False
            token = None if force else self._cache.covering(realm, service, scopes)
            if token is not None:
                return token
            asked = union_scopes(scopes, self._expected)[:MAX_SCOPES] if self.multi_scope and not force else scopes
            try:
                token = fetch_token(send, challenge, asked, cred, registry=registry, plain_http=plain_http)
            except AuthError as e:
                if asked == scopes or e.temporary:
                    raise
                logger.debug("%s: token server refused several scopes at once (%s); asking for %s alone",
                             registry, e, " ".join(scopes))
                self.multi_scope = False
                asked = scopes
                token = fetch_token(send, challenge, asked, cred, registry=registry, plain_http=plain_http)
            self._cache.put((realm, service, frozenset(asked)), token)
            self._expected = union_scopes(asked, self._expected)[:MAX_SCOPES]
            return token


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
