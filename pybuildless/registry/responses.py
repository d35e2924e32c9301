"""Registry responses and URLs: error objects with the registry's codes, Retry-After,
redacted URLs, opaque upload Locations. Shared by the transport and the token flow."""

from __future__ import annotations

import email.utils
import json
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from pybuildless import log
from pybuildless.errors import AuthError, NotFoundError, RegistryError

TEMPORARY_STATUS = frozenset({408, 429, 499, 500, 502, 503, 504, 522})
TEMPORARY_CODES = frozenset({"BLOB_UPLOAD_INVALID", "TOOMANYREQUESTS", "UNKNOWN", "UNAVAILABLE"})
MAX_ERROR_BODY = 64 * 1024
MAX_RETRY_AFTER = 60.0
_SAFE_QUERY_KEYS = frozenset({"digest", "mount", "from", "tag", "n", "last", "service", "scope", "ns"})

def redact_url(url: str) -> str:
    """The URL with user info dropped and query values other than harmless ones hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return log.redact(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [(k, v if k in _SAFE_QUERY_KEYS else "REDACTED") for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe=":/",
    )
    return log.redact(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def with_query(url: str, **params: str) -> str:
    """Merge query parameters into an opaque URL (upload ``Location``s carry their own state)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in params] + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _error_codes(resp: requests.Response) -> tuple[tuple[str, ...], str]:
    """The registry's error codes and a short message from a JSON error body (capped)."""
    try:
        if getattr(resp, "_content_consumed", False):  # not streamed: requests has read the body already
            body = (resp.content or b"")[:MAX_ERROR_BODY]
        else:
            body = resp.raw.read(MAX_ERROR_BODY, decode_content=True) if resp.raw is not None else b""
    except Exception:
        body = b""
    codes: list[str] = []
    messages: list[str] = []
    try:
        doc = json.loads(body)
        for err in doc.get("errors") or []:
            if isinstance(err, dict):
                codes.append(str(err.get("code", "")))
                if err.get("message"):
                    messages.append(str(err["message"]))
    except (ValueError, AttributeError):
        pass
    return tuple(c for c in codes if c), "; ".join(messages)[:300]


def error_from_response(resp: requests.Response, what: str = "") -> RegistryError:
    method = resp.request.method if resp.request is not None else "GET"
    url = redact_url(resp.url or (resp.request.url if resp.request is not None else ""))
    codes, message = _error_codes(resp)
    resp.close()
    detail = f": {', '.join(codes)}" if codes else ""
    if message:
        detail += f" ({log.redact(message)})"
    text = f"{what + ': ' if what else ''}{method} {url}: HTTP {resp.status_code}{detail}"
    temporary = resp.status_code in TEMPORARY_STATUS or bool(set(codes) & TEMPORARY_CODES)
    cls: type[RegistryError] = RegistryError
    if resp.status_code in (401, 403) or set(codes) & {"UNAUTHORIZED", "DENIED"}:
        cls, temporary = AuthError, False
    elif resp.status_code == 404 or set(codes) & {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"}:
        cls = NotFoundError
    err = cls(text, status=resp.status_code, method=method, url=url, codes=codes, temporary=temporary)
    err.retry_after = retry_after_seconds(resp)  # type: ignore[attr-defined]
    return err


def retry_after_seconds(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def describe_exception(e: Exception) -> str:
    """A short, secret-free phrase for a network failure (requests' own texts run to lines)."""
    reason = str(e)
    lowered = reason.lower()
    if "connection reset" in lowered or "connectionreseterror" in lowered:
        return "connection reset by peer"
    if "remotedisconnected" in lowered or "connection aborted" in lowered:
        return "connection closed by the registry"
    if "timed out" in lowered or "timeout" in type(e).__name__.lower():
        return "timed out"
    if "connection refused" in lowered:
        return "connection refused"
    if "nameresolution" in lowered or "name or service not known" in lowered or "name resolution" in lowered:
        return "cannot resolve the host name"
    if "certificate verify failed" in lowered:
        detail = reason.split("certificate verify failed:", 1)[-1].split(")")[0].strip()
        return f"TLS certificate not trusted ({detail or 'verify failed'}); see --registry-certificate"
    if "ssl" in lowered:
        return "TLS handshake failed"
    return f"{type(e).__name__}: {log.redact(reason)[:200]}"


def header_values(resp: requests.Response, name: str) -> list[str]:
    raw = getattr(resp.raw, "headers", None)
    if raw is not None and hasattr(raw, "getlist"):
        values = raw.getlist(name)
        if values:
            return list(values)
    value = resp.headers.get(name)
    return [value] if value else []
