"""``.dockerignore`` as moby's patternmatcher does it (used by BuildKit, docker CLI, kaniko).

Public API::

    read_ignore_patterns(text) -> list[str]          # ignorefile.ReadAll
    PatternMatcher(patterns)                          # patternmatcher.New
    matcher.excludes(rel_path) -> bool               # MatchesOrParentMatches
    matcher.can_skip_dir(rel_dir) -> bool            # excluded, and no "!" pattern can reach inside
    load_dockerignore(context_dir, dockerfile_path) -> PatternMatcher
    walk_context(context_dir, matcher) -> Iterator[str]

Rules: ``#`` comments only at column 1; blank lines skipped; leading ``!`` = exception; each
pattern ``Clean``-ed, one leading ``/`` dropped, trailing ``/`` gone; every pattern anchored at
the context root; ``**`` any number of directories; a pattern excludes a path if it matches the
path or any parent; the last matching pattern wins. ``<Dockerfile>.dockerignore`` next to the
Dockerfile overrides ``<context>/.dockerignore``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pybuildless.dockerfile.pathmatch import BadPattern, match, validate
from pybuildless.errors import PybuildlessError


class IgnoreFileError(PybuildlessError):
    """A malformed ``.dockerignore`` pattern; the message names the file."""


def _go_clean(path: str) -> str:
    """Go ``filepath.Clean`` (lexical; ``..`` kept where it cannot be resolved)."""
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    text = "/".join(out)
    if rooted:
        return "/" + text
    return text or "."


def read_ignore_patterns(text: str) -> list[str]:
    """Parse ignore-file text into patterns (``!`` kept as a prefix)."""
    patterns: list[str] = []
    for number, line in enumerate(text.splitlines()):
        if number == 0 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue  # only column 1: "  # x" is a pattern
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


@dataclass(frozen=True)
class _Pattern:
    text: str  # cleaned, without "!"
    exclusion: bool  # True for "!" (re-include) patterns
    kind: str  # exact | prefix | suffix | regex
    regex: re.Pattern[str] | None

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


_REGEX_SPECIAL = set(".+()|{}$")


def _compile(text: str, exclusion: bool) -> _Pattern:
    regex = "^"
    kind = "exact"
    i = 0
    n = len(text)
    first = True
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1  # "**/" is one token
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regex"
                else:
                    regex += "(.*/)?"
                    kind = "regex"
                if first:
                    kind = "suffix"
            else:
                regex += "[^/]*"
                kind = "regex"
        elif ch == "?":
            regex += "[^/]"
            kind = "regex"
        elif ch in _REGEX_SPECIAL:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += re.escape(text[i])
                i += 1
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = "regex"
        else:
            regex += re.escape(ch) if ch in "^\\-" else ch
        first = False
    if kind != "regex":
        return _Pattern(text, exclusion, kind, None)
    try:
        compiled = re.compile(regex + r"\Z", re.DOTALL)
    except re.error as exc:
        raise BadPattern(f"syntax error in pattern {text!r}: {exc}") from None
    return _Pattern(text, exclusion, kind, compiled)


class PatternMatcher:
    """An ordered list of ignore patterns; the last matching pattern decides."""

    def __init__(self, patterns: Iterable[str] = (), *, source: str = ".dockerignore") -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise IgnoreFileError(f'{source}: illegal exclusion pattern: "!"')
                p = p[1:]
            p = _go_clean(p)
            try:
                validate(p)
                self.patterns.append(_compile(p, exclusion))
            except BadPattern as exc:
                raise IgnoreFileError(f"{source}: {exc}") from None
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def excludes(self, rel_path: str) -> bool:
        """True if ``rel_path`` (``/``-separated, relative to the context) is ignored."""
        path = _go_clean(rel_path.lstrip("/"))
        parent = path.rsplit("/", 1)[0] if "/" in path else "."
        parents = parent.split("/") if parent != "." else []
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # "!" only matters while excluded, includes only while included
            hit = pattern.matches(path)
            if not hit:
                hit = any(pattern.matches("/".join(parents[: i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pattern.exclusion
        return matched

    def can_skip_dir(self, rel_dir: str) -> bool:
        """True if ``rel_dir`` is excluded and no exception pattern could re-include anything in it."""
        if not self.excludes(rel_dir):
            return False
        parts = _go_clean(rel_dir).split("/")
        return not any(p.exclusion and _may_reach_inside(p.text, parts) for p in self.patterns)


def _may_reach_inside(pattern: str, dir_parts: list[str]) -> bool:
    """Conservative: could ``pattern`` match some path strictly inside the directory?"""
    pat_parts = pattern.split("/")
    for pat, name in zip(pat_parts, dir_parts):
        if "**" in pat:
            return True
        try:
            if not match(pat, name):
                return False
        except BadPattern:
            return True
    return True


def load_dockerignore(context_dir: str, dockerfile_path: str | None = None) -> PatternMatcher:
    """``<dockerfile>.dockerignore`` if it exists, else ``<context>/.dockerignore``, else empty."""
    candidates = []
    if dockerfile_path and dockerfile_path != "-":
        candidates.append(dockerfile_path + ".dockerignore")
    candidates.append(os.path.join(context_dir, ".dockerignore"))
    for candidate in candidates:
        try:
            with open(candidate, "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise IgnoreFileError(f"{candidate}: cannot read: {exc.strerror}") from None
        text = data.decode("utf-8", errors="surrogateescape")
        return PatternMatcher(read_ignore_patterns(text), source=candidate)
    return PatternMatcher()


def walk_context(context_dir: str, matcher: PatternMatcher) -> Iterator[str]:
    """Yield included entries (files, dirs, symlinks) as sorted relative ``/`` paths.

    Excluded directories are pruned unless an exception pattern may re-include something
    inside; then the directory itself is yielded just before its first included entry, so
    consumers always see parents before children. Symlinks are not followed."""

    def walk(rel: str, emitted_parent: bool) -> Iterator[str]:
        here = os.path.join(context_dir, rel) if rel else context_dir
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            return
        pending_parents = [] if emitted_parent else [rel]
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            included = not matcher.excludes(child)
            if included:
                yield from pending_parents
                pending_parents = []
                yield child
            if is_dir and (included or not matcher.can_skip_dir(child)):
                for item in walk(child, included):
                    yield from pending_parents
                    pending_parents = []
                    yield item

    # The root itself is never yielded; pretend it was emitted.
    yield from walk("", True)
