"""HTTP transport for one registry host: ping, scheme, TLS, auth, retries, errors.

Layered after go-containerregistry's transport: a ``/v2/`` ping decides the
scheme and the auth scheme; Basic is sent pre-emptively and Bearer tokens are
cached per (realm, service, scope set); credentials go only to the registry
host and to the token realm, never to a redirect target or an upload Location
on another host; redirects, realms and Locations pointing at private addresses
are refused for public registries; temporary failures
(408, 429, 5xx, connection resets) are retried with jittered backoff honouring
``Retry-After``; errors carry the registry's codes and a redacted URL.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from pybuildless import __version__, log
from pybuildless.errors import AuthError, RegistryError
from pybuildless.registry.challenge import Challenge, merge_scopes, parse_challenges, pick_challenge
from pybuildless.registry.credentials import Credential
from pybuildless.registry.options import RegistryOptions, defaults_to_http, is_private_address
from pybuildless.registry.responses import (
    TEMPORARY_STATUS,
    describe_exception,
    error_from_response,
    header_values,
    redact_url,
    with_query,
)
from pybuildless.registry.tokens import BuildTokens
from pybuildless.registry.trust import answers_plain_http, https_adapter

logger = logging.getLogger(__name__)

Body = bytes | Callable[[], BinaryIO] | None
USER_AGENT = f"pybuildless/{__version__}"


class _HeaderAuth(requests.auth.AuthBase):
    """Sets Authorization; passing it as ``auth=`` also stops requests applying ~/.netrc over it."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.value:
            r.headers["Authorization"] = self.value
        else:
            r.headers.pop("Authorization", None)
        return r


@dataclass(frozen=True)
class PingResult:
    """What a registry's /v2/ answered: the scheme to use and its auth challenge."""

    scheme: str  # "https" or "http"
    challenge: Challenge | None  # None: the registry needs no auth


class Transport:
    """Requests against one registry host. Thread-safe: one ``Session`` per thread."""

    def __init__(
        self,
        registry: str,
        options: RegistryOptions,
        *,
        pull: bool = False,
        credential: Credential | None = None,
        sleep: Callable[[float], None] = time.sleep,
        tokens: BuildTokens | None = None,
    ) -> None:
        self.registry = registry  # host[:port] to contact (Docker Hub: registry-1.docker.io)
        self.options = options
        self.pull = pull
        self._credential = credential
        self._sleep = sleep
        self._local = threading.local()
        # separate locks: the ping holds its lock across network I/O that may log warnings
        self._ping_lock = threading.Lock()
        self._cred_lock = threading.Lock()
        self._warn_lock = threading.Lock()
        self._ping: PingResult | None = None
        self._tokens = tokens if tokens is not None else BuildTokens()  # shared with the host's other transport
        self._warned: set[str] = set()
        self.single_post_uploads: bool | None = None  # None: not tried yet (client.upload_small)
        self.verify = options.verify_tls(registry, pull=pull)
        self.cert = options.client_cert(registry)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # No ~/.netrc or proxy variables behind our back; proxies are applied per request.
            s.trust_env = False
            pools = dict(pool_connections=4, pool_maxsize=self.options.parallel + 2, max_retries=0)
            s.mount("http://", HTTPAdapter(**pools))
            # SSL_CERT_DIR set (as in the executor image): every file in it is trusted, as Kaniko does
            s.mount("https://", https_adapter(self.verify, **pools))
            s.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            self._local.session = s
        return s

    @property
    def credential(self) -> Credential:
        if self._credential is None:
            with self._cred_lock:
                if self._credential is None:
                    self._credential = self.options.get_keychain().resolve(self.registry)
        return self._credential

    def _send(self, method: str, url: str, *, auth: str | None, **kwargs: Any) -> requests.Response:
        if self.verify is False:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        logger.log(log.TRACE, "%s %s", method, redact_url(url))
        resp = self.session.request(
            method,
            url,
            auth=_HeaderAuth(auth),
            verify=self.verify,
            cert=self.cert,
            timeout=self.options.timeout,
            proxies=get_environ_proxies(url),
            **kwargs,
        )
        logger.log(log.TRACE, "%s %s -> %d", method, redact_url(url), resp.status_code)
        self._surface_warnings(resp)
        return resp

    def _surface_warnings(self, resp: requests.Response) -> None:
        """Registries announce deprecations as ``Warning: 299 - "text"``; show each text once."""
        for value in header_values(resp, "Warning"):
            code, _, rest = value.strip().partition(" ")
            if code != "299":
                continue
            text = rest.partition(" ")[2].strip().strip('"')
            with self._warn_lock:
                if text in self._warned:
                    continue
                self._warned.add(text)
            logger.warning("registry %s: %s", self.registry, log.redact(text))

    def check_foreign_host(self, url: str, what: str, error: type[RegistryError] = RegistryError) -> None:
        """SSRF hardening (ggcr #2243, #2295): a registry may send us to other hosts (token realm,
        redirects, upload Locations), but not to private addresses unless it is local itself."""
        host = urlsplit(url).hostname or ""
        if not is_private_address(host) or host.lower() == self.registry.rsplit(":", 1)[0].strip("[]").lower():
            return
        if is_private_address(self.registry.rsplit(":", 1)[0]) or self.ping_scheme == "http":
            return  # a local or explicitly insecure registry may point at local services
        raise error(f"{self.registry}: refusing {what} on a private address {host}")

    @property
    def ping_scheme(self) -> str:
        return self.ping().scheme

    def base_url(self) -> str:
        return f"{self.ping_scheme}://{self.registry}"

    # -- ping -----------------------------------------------------------------------------

    def ping(self) -> PingResult:
        with self._ping_lock:
            if self._ping is None:
                self._ping = self._do_ping()
            return self._ping

    def _do_ping(self) -> PingResult:
        # go-containerregistry's ping (pkg/v1/remote/transport/ping.go at 3f4ff3ca60f5): an insecure
        # registry (flags, or a local name: defaults_to_http) tries HTTPS first, then plain HTTP;
        # everything else is HTTPS only. Only a mirror written http://host speaks plain HTTP alone.
        if self.options.http_only(self.registry):
            return self._ping_scheme("http", retry=True)
        if self.options.plain_http(self.registry, pull=self.pull) or defaults_to_http(self.registry):
            # A server answering a TLS hello in plain HTTP needs no verifying HTTPS attempt, which
            # would read every trusted root first (a proxied URL goes the usual way).
            if get_environ_proxies(f"https://{self.registry}/v2/") or not answers_plain_http(
                    self.registry, self.options.timeout[0]):
                try:
                    return self._ping_scheme("https", retry=False)
                except RegistryError as e:
                    # An untrusted certificate is a TLS problem to report, not a reason for HTTP.
                    if e.status is not None or "TLS certificate" in str(e):
                        raise
            logger.debug("%s: no HTTPS, using plain HTTP", self.registry)
            return self._ping_scheme("http", retry=True)
        return self._ping_scheme("https", retry=True)

    def _ping_scheme(self, scheme: str, *, retry: bool) -> PingResult:
        url = f"{scheme}://{self.registry}/v2/"

        def once() -> requests.Response:
            try:
                resp = self._send("GET", url, auth=None, stream=True)
            except (requests.ConnectionError, requests.Timeout) as e:
                if not retry:
                    raise RegistryError(f"GET {url}: {describe_exception(e)}", temporary=True) from None
                raise
            if resp.status_code in TEMPORARY_STATUS:
                raise error_from_response(resp, "ping")
            return resp

        resp = self._with_retries(once, f"ping {self.registry}") if retry else once()
        try:
            if resp.status_code == 200:
                return PingResult(scheme, None)
            if resp.status_code == 401:
                challenge = pick_challenge(parse_challenges(header_values(resp, "WWW-Authenticate")))
                if challenge is None:
                    raise AuthError(f"{self.registry}: unsupported authentication challenge", status=401)
                return PingResult(scheme, challenge)
            raise error_from_response(resp, f"{self.registry} is not a v2 registry")
        finally:
            resp.close()

    # -- auth -----------------------------------------------------------------------------

    def _authorization(self, scopes: tuple[str, ...], *, force: bool = False) -> str | None:
        challenge = self.ping().challenge
        if challenge is None:
            return None
        cred = self.credential
        if challenge.scheme == "basic":
            if cred.anonymous or not cred.username:
                return None
            value = requests.auth._basic_auth_str(cred.username, cred.password)
            log.register_secret(value.split(" ", 1)[1])
            return value
        if cred.registry_token:
            return f"Bearer {cred.registry_token}"
        token = self._tokens.get(challenge, scopes, cred, force=force, send=self.token_request,
                                 registry=self.registry, plain_http=self.ping_scheme == "http")
        return f"Bearer {token.value}"

    def expect(self, scopes: Iterable[str]) -> None:
        """Scopes this process will need here (a build's destinations, known before any request):
        the next token is asked for with them too, so one token serves the whole build."""
        self._tokens.expect(scopes)

    def token_request(self, method: str, url: str, *, auth: str | None, data: dict | None = None) -> requests.Response:
        """The token fetcher's way out: to a realm on a host the registry may send us to, retried."""
        self.check_foreign_host(url, "token realm", AuthError)

        def once() -> requests.Response:
            resp = self._send(method, url, auth=auth, data=data, stream=True)
            if resp.status_code in TEMPORARY_STATUS:
                raise error_from_response(resp, "token request")
            return resp

        return self._with_retries(once, "token request")

    # -- requests with auth and retries ---------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scopes: Iterable[str] = (),
        headers: dict[str, str] | None = None,
        body: Body = None,
        ok: Iterable[int] = (200,),
        stream: bool = False,
        what: str = "",
        follow_redirects: bool = True,
        retry: bool = True,
    ) -> requests.Response:
        """Send a request, authenticating for ``scopes``; return a response whose status is in ``ok``.

        ``body`` is bytes or a callable opening a fresh file (so a retry can resend it).
        Redirects are followed by hand for GET/HEAD only, without credentials on a
        foreign host; any other status raises a ``RegistryError`` subclass.
        """
        scopes = tuple(scopes)
        ok = tuple(ok)
        url = path_or_url if "://" in path_or_url else self.base_url() + path_or_url
        reauthed = False

        def attempt() -> requests.Response:
            nonlocal scopes, reauthed
            auth = self._authorization(scopes)
            resp = self._follow(method, url, auth=auth, headers=headers, body=body, stream=stream,
                                follow=follow_redirects and method in ("GET", "HEAD"))
            if resp.status_code == 401 and not reauthed:
                # A resource 401 names the scope it wants; get a token for the union, once.
                wanted = pick_challenge(parse_challenges(header_values(resp, "WWW-Authenticate")))
                if self.ping().challenge is None:
                    if wanted is None:
                        return resp
                    # /v2/ was open but this resource is not: adopt the resource's challenge
                    scheme = self.ping_scheme
                    with self._ping_lock:
                        self._ping = PingResult(scheme, wanted)
                reauthed = True
                resp.close()
                if wanted is not None and wanted.scopes:
                    scopes = merge_scopes(wanted.scopes, scopes)
                auth = self._authorization(scopes, force=True)
                resp = self._follow(method, url, auth=auth, headers=headers, body=body, stream=stream,
                                    follow=follow_redirects and method in ("GET", "HEAD"))
            return resp

        def checked() -> requests.Response:
            try:
                resp = attempt()
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as e:
                raise RegistryError(f"{what + ': ' if what else ''}{method} {redact_url(url)}: {describe_exception(e)}",
                                    method=method, url=redact_url(url), temporary=True) from None
            if resp.status_code in ok:
                return resp
            err = error_from_response(resp, what)
            if resp.status_code == 401 and self.ping().challenge is not None and self.credential.anonymous:
                err.args = (f"{err} (no credentials for {self.registry}: add them to the Docker config.json)",)
            raise err

        if not retry:
            return checked()
        return self._with_retries(checked, what or f"{method} {redact_url(url)}")

    def _follow(self, method: str, url: str, *, auth: str | None, headers, body: Body, stream: bool,
                follow: bool) -> requests.Response:
        for _ in range(10):
            # Credentials go to the registry host only: never to a redirect target or an upload
            # Location on another host (object storage, CDNs), nor in plain HTTP when the registry
            # speaks HTTPS (a TLS proxy not passing X-Forwarded-Proto makes distribution answer
            # http:// Locations; Docker's client keys its challenges by scheme and host and sends
            # none there either: distribution/distribution registry/client/auth/challenge/
            # authchallenge.go at 6a41b0e64c07cad2105d37828e17ee5131a64290).
            parts = urlsplit(url)
            own_host = parts.netloc.lower() == self.registry.lower() and (
                parts.scheme == "https" or self.ping_scheme == "http")
            data = body() if callable(body) else body
            try:
                resp = self._send(method, url, auth=auth if own_host else None,
                                  headers=headers, data=data, stream=stream, allow_redirects=False)
            finally:
                if data is not None and hasattr(data, "close"):
                    data.close()
            if not follow or resp.status_code not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                return resp
            url = urljoin(url, location)
            self.check_foreign_host(url, "redirect")
            logger.debug("redirected to %s", redact_url(url))
        raise RegistryError(f"{method} {redact_url(url)}: too many redirects")

    def _with_retries(self, fn: Callable[[], requests.Response], what: str) -> requests.Response:
        attempts = max(0, self.options.retries) + 1
        for n in range(attempts):
            try:
                return fn()
            except RegistryError as e:
                if not e.temporary or n == attempts - 1:
                    raise
                delay = getattr(e, "retry_after", None)
                logger.warning("%s failed (%s); retrying (%d/%d)", what, e, n + 1, attempts - 1)
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.ProtocolError) as e:
                if n == attempts - 1:
                    raise RegistryError(f"{log.redact(what)}: {describe_exception(e)}", temporary=True) from None
                delay = None
                logger.warning("%s failed (%s); retrying (%d/%d)", what, describe_exception(e), n + 1, attempts - 1)
            self._sleep(delay if delay is not None else backoff(n))
        raise AssertionError("unreachable")


def backoff(attempt: int) -> float:
    """0.2 s, 0.6 s, 1.8 s, ... with ±10% jitter."""
    return 0.2 * (3**attempt) * random.uniform(0.9, 1.1)


__all__ = ["Transport", "PingResult", "error_from_response", "redact_url", "with_query", "TEMPORARY_STATUS"]
