"""``WWW-Authenticate`` parsing (RFC 7235 / RFC 6750 §3) and token scopes.

Values are quoted strings with backslash escapes or bare tokens; one header may
carry several challenges (``Negotiate, Basic realm="x"``) and a response may
carry several headers. A hand-written scanner, not a regex: regexes either miss
bare and escaped values or swallow the next parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Bare parameter values: tokens, plus the characters token68 allows.
_TOKEN68_CHARS = _TOKEN_CHARS | frozenset("/=")


@dataclass(frozen=True)
class Challenge:
    """One WWW-Authenticate challenge: its scheme and parameters."""

    scheme: str  # lowercased: "bearer", "basic", ...
    params: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.params:
            if k == key.lower():
                return v
        return default

    @property
    def realm(self) -> str:
        return self.get("realm")

    @property
    def service(self) -> str:
        return self.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.get("scope").split())

    @property
    def error(self) -> str:
        return self.get("error")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self, chars: frozenset[str] = _TOKEN_CHARS) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        assert self.peek() == '"'
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif ch == '"':
                return "".join(out)
            else:
                out.append(ch)
        return "".join(out)  # unterminated: keep what we have

    def skip_to_comma(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            self.pos += 1


def parse_challenges(headers: Iterable[str] | str) -> list[Challenge]:
    """All challenges from one or several ``WWW-Authenticate`` header values."""
    if isinstance(headers, str):
        headers = [headers]
    found: list[Challenge] = []
    for header in headers:
        found.extend(_parse_one_header(header))
    return found


def _parse_one_header(header: str) -> list[Challenge]:
    s = _Scanner(header)
    challenges: list[Challenge] = []
    scheme: str | None = None
    params: list[tuple[str, str]] = []

    def flush() -> None:
        if scheme:
            challenges.append(Challenge(scheme.lower(), tuple(params)))

    while True:
        s.skip_space()
        if not s.peek():
            break
        if s.peek() == ",":
            s.pos += 1
            continue
        name = s.token()
        if not name:  # garbage: skip to the next element
            s.pos += 1
            s.skip_to_comma()
            continue
        s.skip_space()
        if s.peek() == "=" and scheme is not None:
            # auth-param of the current challenge
            s.pos += 1
            s.skip_space()
            value = s.quoted() if s.peek() == '"' else s.token(_TOKEN68_CHARS)
            params.append((name.lower(), value))
            s.skip_space()
            if s.peek() == ",":
                s.pos += 1
            continue
        # a new scheme starts
        flush()
        scheme, params = name, []
        # An optional token68 may follow the scheme ("Negotiate abc=="): consume and ignore it.
        # It is only a token68 when its '=' run is final; "realm=x" is the first auth-param.
        save = s.pos
        tok = s.token()
        if tok:
            s.token(frozenset("="))
            s.skip_space()
            if s.peek() not in ("", ","):
                s.pos = save
    flush()
    return challenges


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The first Bearer or Basic challenge (case-insensitive); others are ignored."""
    for c in challenges:
        if c.scheme in ("bearer", "basic"):
            return c
    return None


def split_scope(scope: str) -> tuple[str, str, tuple[str, ...]]:
    """``repository:host:5000/ns/repo:pull,push`` → (type, name, actions); actions after the LAST ':'."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, tuple(a for a in actions.split(",") if a)


def merge_scopes(required: Iterable[str], held: Iterable[str]) -> tuple[str, ...]:
    """Newly required scopes first ("some registries only look at the first scope"), no duplicates."""
    out: list[str] = []
    for s in list(required) + list(held):
        if s and s not in out:
            out.append(s)
    return tuple(out)


def _access(scopes: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """Scopes as {(type, name): actions}, in first-seen order; actions of one resource unioned."""
    out: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        kind, name, actions = split_scope(scope)
        if not kind or not name:
            continue
        have = out.setdefault((kind, name), [])
        have.extend(a for a in actions if a not in have)
    return out


def union_scopes(required: Iterable[str], held: Iterable[str]) -> tuple[str, ...]:
    """One scope per resource for everything in ``required`` and ``held``, ``required``'s first
    ("some registries only look at the first scope"), actions of a resource merged
    (``repository:a:pull`` and ``repository:a:push,pull`` give ``repository:a:push,pull``)."""
    access = _access(list(required) + list(held))
    return tuple(f"{kind}:{name}:{','.join(actions)}" for (kind, name), actions in access.items())


def covers(granted: Iterable[str], needed: Iterable[str]) -> bool:
    """Every action of ``needed`` is among the scopes a token was asked for with."""
    have = _access(granted)
    return all(set(actions) <= set(have.get(key, ())) for key, actions in _access(needed).items())
