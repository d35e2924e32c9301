"""``RUN --mount=`` specs and Go-style durations (HEALTHCHECK options).

``parse_mount(spec, expand=None)`` follows BuildKit's ``commands_runmount.go``: CSV fields,
default type ``bind``, ``target``/``dst``/``destination`` and ``src``/``source`` synonyms,
bare or ``=bool`` ``ro``/``readonly``/``rw``/``readwrite`` (read-only by default for bind,
secret and ssh; read-write for cache and tmpfs), ``required`` only for secret/ssh, ``size`` only
for tmpfs, ``mode``/``uid``/``gid`` only for secret/ssh/cache, unknown keys rejected. ``expand``
(a str -> str function) is applied to every value except ``from`` (BuildKit forbids variables
there). Errors are ``MountError`` (a ``ValueError``); the parser adds file and line.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")


class MountError(ValueError):
    """An invalid ``--mount`` spec."""


@dataclass(frozen=True)
class Mount:
    """One parsed ``--mount``. ``target`` is as written (the executor resolves it against WORKDIR)."""

    type: str = "bind"
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = True
    id: str | None = None
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: str | None = None
    required: bool = False
    env: str | None = None


def _parse_bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in ("true", "1", "t"):
        return True
    if low in ("false", "0", "f"):
        return False
    raise MountError(f"invalid value for {key}: {value}")


def parse_mount(spec: str, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` value."""
    import csv  # BuildKit reads the value as one CSV record; loaded only for a RUN with --mount

    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as exc:
        raise MountError(f"invalid mount spec {spec!r}: {exc}") from None
    same = expand or (lambda v: v)
    mount_type = "bind"
    for field in fields:
        key, sep, value = field.partition("=")
        if sep and key.strip().lower() == "type":
            mount_type = same(value).lower()
    if mount_type not in MOUNT_TYPES:
        raise MountError(f"unsupported mount type {mount_type!r}")
    values: dict[str, object] = {"type": mount_type, "readonly": mount_type in ("bind", "secret", "ssh")}
    for field in fields:
        key, sep, raw = field.partition("=")
        key = key.strip().lower()
        if not sep:
            if key in ("readonly", "ro"):
                values["readonly"] = True
            elif key in ("readwrite", "rw"):
                values["readonly"] = False
            elif key == "required" and mount_type in ("secret", "ssh"):
                values["required"] = True
            else:
                raise MountError(f"unexpected key '{key}' for mount type '{mount_type}'")
            continue
        if key == "type":
            continue
        if key == "from":
            values["from_"] = raw  # never expanded (BuildKit rejects variables here)
            continue
        value = same(raw)
        if key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("readonly", "ro"):
            values["readonly"] = _parse_bool(key, value)
        elif key in ("readwrite", "rw"):
            values["readonly"] = not _parse_bool(key, value)
        elif key == "required" and mount_type in ("secret", "ssh"):
            values["required"] = _parse_bool(key, value)
        elif key == "id":
            values["id"] = value
        elif key == "sharing" and mount_type == "cache":
            if value not in _SHARING:
                raise MountError(f"unsupported sharing value {value!r}")
            values["sharing"] = value
        elif key == "size" and mount_type == "tmpfs":
            values["size"] = value
        elif key in ("mode", "uid", "gid") and mount_type in ("secret", "ssh", "cache"):
            try:
                values[key] = int(value, 8) if key == "mode" else int(value)
            except ValueError:
                raise MountError(f"invalid value {value!r} for {key}") from None
        elif key == "env" and mount_type == "secret":
            values["env"] = value
        else:
            raise MountError(f"unexpected key '{key}' in '{field}'")
    mount = Mount(**values)  # type: ignore[arg-type]
    return _apply_defaults(mount)


def _apply_defaults(m: Mount) -> Mount:
    from dataclasses import replace

    if m.type == "secret":
        if m.id is None and m.target is None and m.env is None:
            raise MountError("secret mount requires an id or a target")
        secret_id = m.id or posixpath.basename(m.target or "")
        target = m.target if m.target is not None or m.env else f"/run/secrets/{secret_id}"
        return replace(m, id=secret_id, target=target)
    if m.type == "ssh":
        return replace(m, id=m.id or "default")
    if not m.target:
        raise MountError(f"mount type {m.type} requires a target")
    if m.type == "cache":
        return replace(m, id=m.id or m.target)
    return m


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_go_duration(text: str) -> int:
    """Parse a Go duration (``30s``, ``1m30s``, ``1.5h``, ``0``) into integer nanoseconds."""
    s = text.strip()
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return sign * int(round(total))
