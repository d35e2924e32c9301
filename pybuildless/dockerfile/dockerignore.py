"""``.dockerignore`` as moby's patternmatcher does it (used by BuildKit, docker CLI, kaniko).

Public API::

    read_ignore_patterns(text) -> list[str]          # ignorefile.ReadAll
    PatternMatcher(patterns)                          # patternmatcher.New
    matcher.excludes(rel_path) -> bool               # MatchesOrParentMatches
    matcher.can_skip_dir(rel_dir) -> bool            # excluded, and the context walk does not enter it
    matcher.in_context(rel_path, is_dir) -> bool     # sent with the context (Docker 20.10's walk)
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

from pybuildless.dockerfile.pathmatch import BadPattern, validate
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
    # bufio.ScanLines: a line ends at "\n" only, minus one "\r" before it (splitlines also splits at
    # "\r", "\f", "\x1c".."\x1e", "\u2028", ...)
    for number, line in enumerate(text.split("\n")):
        line = line.removesuffix("\r")
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
    """One .dockerignore line, compiled to the cheapest matcher that gives the same answers."""

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
                # An escaped character makes the pattern a regexp (patternmatcher.go compile).
                regex += re.escape(text[i])
                i += 1
                kind = "regex"
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = "regex"
        else:
            # Passed through as patternmatcher.go does, so '^' and '-' keep their meaning inside
            # a class ([^a], [a-c]); outside one they mean the same in Python's regexps as in Go's.
            regex += ch
        first = False
    if kind != "regex":
        return _Pattern(text, exclusion, kind, None)
    try:
        # no DOTALL: Go's "." (from "**") does not match a newline, "[^/]" does (regexp/syntax defaults)
        compiled = re.compile(regex + r"\Z")
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

    def enters(self, rel_dir: str) -> bool:
        """Whether the context walk goes into the *excluded* directory ``rel_dir`` (and keeps it).

        Docker 20.10's context walk (tonistiigi/fsutil walker.go@0834f99b7b85, vendored by
        docker/cli v20.10.24 and moby/buildkit@eeb7b65ab7d6) enters an excluded directory
        only when some ``!`` pattern's text, plus ``/``, starts with the directory's path plus
        ``/`` (a literal prefix test: ``!docs/**/keep.md`` does not open ``docs/drafts``);
        it then sends the directory itself too, even if nothing below is re-included.
        """
        prefix = _go_clean(rel_dir) + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)

    def can_skip_dir(self, rel_dir: str) -> bool:
        """True if ``rel_dir`` is excluded and the context walk does not go into it."""
        return self.excludes(rel_dir) and not self.enters(rel_dir)

    def in_context(self, rel_path: str, is_dir: bool) -> bool:
        """Whether ``rel_path`` is part of the context as that walk sends it: no ancestor was
        skipped, and the path is not excluded (or is an excluded directory the walk enters)."""
        path = _go_clean(rel_path.lstrip("/"))
        if path == ".":
            return True
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.can_skip_dir("/".join(parts[:i])):
                return False
        return not self.excludes(path) or (is_dir and self.enters(path))


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
    """Yield the entries (files, dirs, symlinks) the context holds, as sorted relative ``/``
    paths, parents before children: excluded directories are pruned unless the walk enters
    them (``PatternMatcher.enters``), and then they are yielded themselves. Symlinks are not
    followed."""

    def walk(rel: str) -> Iterator[str]:
        here = os.path.join(context_dir, rel) if rel else context_dir
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if matcher.excludes(child) and not (is_dir and matcher.enters(child)):
                continue
            yield child
            if is_dir:
                yield from walk(child)

    yield from walk("")
