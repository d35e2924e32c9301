"""Go ``path/filepath.Match`` semantics (for COPY wildcards, ``--exclude`` and .dockerignore).

- ``*`` any run of non-``/`` characters, ``?`` one non-``/`` character (both match dotfiles);
- ``[...]`` a class with ``^`` negation, ranges ``a-z`` and ``\\`` escapes; ``[]`` or an
  unterminated class is a bad pattern;
- ``\\x`` matches ``x``; a trailing ``\\`` is a bad pattern.

Python's ``fnmatch`` (``*`` crosses ``/``, ``!`` negation) and ``glob`` (skips dotfiles) differ,
so they are not used.
"""

from __future__ import annotations

import functools
import os
import re


class BadPattern(ValueError):
    """``filepath.ErrBadPattern``."""


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``i``; return (regex, index after ``]``)."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[str] = []
    count = 0

    def char(j: int) -> tuple[str, int]:
        if j >= len(pattern) or pattern[j] in "-]":
            raise BadPattern(f"syntax error in pattern {pattern!r}")
        if pattern[j] == "\\":
            j += 1
            if j >= len(pattern):
                raise BadPattern(f"syntax error in pattern {pattern!r}")
        if j + 1 >= len(pattern):
            raise BadPattern(f"syntax error in pattern {pattern!r}")  # class never closed
        return pattern[j], j + 1

    while True:
        if i < len(pattern) and pattern[i] == "]" and count > 0:
            i += 1
            break
        lo, i = char(i)
        hi = lo
        if pattern[i] == "-":
            hi, i = char(i + 1)
        if lo <= hi:  # Go accepts an inverted range; it just never matches
            ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
        count += 1
    body = "".join(ranges)
    if not body:
        return ("[\\s\\S]" if negated else "(?!)"), i
    return f"[{'^' if negated else ''}{body}]", i


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a Go filepath.Match pattern into an anchored regex (raises ``BadPattern``)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            regex, i = _class(pattern, i)
            out.append(regex)
        elif ch == "\\":
            if i >= len(pattern):
                raise BadPattern(f"syntax error in pattern {pattern!r}")
            out.append(re.escape(pattern[i]))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def match(pattern: str, name: str) -> bool:
    """``filepath.Match(pattern, name)``; the whole name must match."""
    return compile_pattern(pattern).match(name) is not None


def validate(pattern: str) -> None:
    compile_pattern(pattern)


def has_wildcards(path: str) -> bool:
    """True if ``path`` uses ``*``, ``?`` or ``[`` outside ``\\`` escapes (BuildKit's rule)."""
    i = 0
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] in "*?[":
            return True
        i += 1
    return False


def unescape(path: str) -> str:
    return re.sub(r"\\(.)", r"\1", path)


def glob_paths(root: str, pattern: str) -> list[str]:
    """Paths under ``root`` (relative, ``/``-separated, sorted) matching ``pattern`` component by
    component. Leading ``/`` and ``..`` are clamped to ``root``. A wildcard matching nothing
    gives ``[]`` (not an error); the caller reports a missing *literal* path.

    Symlinks are followed as the OS does; callers needing root confinement pass a root they
    have already secured (or resolve results with the fs layer)."""
    parts = [p for p in clean(pattern).split("/") if p not in ("", ".")]
    found = [""]
    for part in parts:
        nxt: list[str] = []
        for rel in found:
            here = os.path.join(root, rel) if rel else root
            if has_wildcards(part):
                try:
                    names = sorted(os.listdir(here))
                except (NotADirectoryError, FileNotFoundError, PermissionError):
                    continue
                nxt.extend(f"{rel}/{n}" if rel else n for n in names if match(part, n))
            else:
                name = unescape(part)
                candidate = f"{rel}/{name}" if rel else name
                if os.path.lexists(os.path.join(root, candidate)):
                    nxt.append(candidate)
        found = nxt
    return sorted(p for p in found if p)


def clean(path: str) -> str:
    """Go ``path.Clean`` with ``..`` clamped at the root (context paths cannot escape)."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/".join(out) or "."
