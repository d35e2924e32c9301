"""Which files a COPY/ADD names: sources matched in the context or a stage root, and the
``--exclude`` and ``.dockerignore`` rules that leave some out (the rules are in builder/copy.py).

Source paths are resolved inside their root (fs/inroot.py): a symlink in the context or in
a stage cannot lead a source outside it.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Callable, Protocol

from pybuildless.builder.chmod import Chmod
from pybuildless.errors import BuildError
from pybuildless.fs import inroot

WILDCARD_CHARS = set("*?[")


def resolve_in_root(root: str, path: str, *, follow_final: bool = True) -> str:
    return str(inroot.resolve(root, path, follow_final=follow_final))


class PathMatcher(Protocol):
    def excludes(self, rel_path: str) -> bool: ...
    def enters(self, rel_dir: str) -> bool: ...
    def in_context(self, rel_path: str, is_dir: bool) -> bool: ...


@dataclass
class SourceRoot:
    """Where COPY sources come from: the context (with .dockerignore) or a stage/image root."""

    root: str
    is_context: bool
    ignore: PathMatcher | None = None
    description: str = "build context"


@dataclass
class CopyRequest:
    """One COPY or ADD with its flags resolved: sources, destination, owner, mode, filters."""

    sources: list[str]
    dest: str
    workdir: str = "/"
    owner: tuple[int, int] | None = None
    chmod: Chmod | None = None
    excludes: tuple[str, ...] = ()
    parents: bool = False
    match: Callable[[str, str], bool] | None = None  # Go filepath.Match(pattern, name)
    unpack: Callable[[str], bool] | None = None  # ADD: is this source file an archive to unpack?


def has_wildcard(path: str) -> bool:
    return any(c in WILDCARD_CHARS for c in path)


def _clean_source(src: str) -> str:
    rel = posixpath.normpath("/" + src).lstrip("/")
    return rel or "."


def _expand(src_root: SourceRoot, pattern: str, match) -> list[str]:
    """Relative source paths matching ``pattern`` (component-wise wildcards)."""
    found = [""]
    for comp in pattern.split("/"):
        nxt = []
        for base in found:
            host = resolve_in_root(src_root.root, base) if base else src_root.root
            if not has_wildcard(comp):
                cand = posixpath.join(base, comp) if base else comp
                if os.path.lexists(resolve_in_root(src_root.root, cand, follow_final=False)):
                    nxt.append(cand)
                continue
            try:
                names = sorted(os.listdir(host))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in names:
                if match(comp, name):
                    nxt.append(posixpath.join(base, name) if base else name)
        found = nxt
    return found


def resolve_sources(src_root: SourceRoot, req: CopyRequest) -> list[tuple[str, str]]:
    """[(relative source path, pivot for --parents)] in Dockerfile order."""
    out: list[tuple[str, str]] = []
    for raw in req.sources:
        pivot = ""
        bare = raw
        while bare.startswith("./"):
            bare = bare[2:]  # a leading ./ is just "relative", not a pivot
        if req.parents and "/./" in "/" + bare:
            head, _, _ = ("/" + bare).partition("/./")
            pivot = _clean_source(head)
            if pivot == ".":
                pivot = ""
        rel = _clean_source(raw)
        if has_wildcard(rel):
            if req.match is None:
                raise BuildError("wildcard sources need a matcher")
            matches = [m for m in _expand(src_root, rel, req.match) if not _outside_context(src_root, m)]
            out.extend((m, pivot) for m in matches)
            continue
        host = resolve_in_root(src_root.root, rel) if rel != "." else src_root.root
        if not os.path.lexists(host) or _outside_context(src_root, rel):
            raise BuildError(f"COPY source {raw!r} not found in the {src_root.description}")
        out.append((rel, pivot))
    return out


def _ignored(src_root: SourceRoot, rel: str) -> bool:
    return bool(src_root.is_context and src_root.ignore is not None and rel != "." and src_root.ignore.excludes(rel))


def _outside_context(src_root: SourceRoot, rel: str) -> bool:
    """A source path .dockerignore kept out of the context (see PatternMatcher.in_context)."""
    if not src_root.is_context or src_root.ignore is None or rel == ".":
        return False
    is_dir = os.path.isdir(resolve_in_root(src_root.root, rel))
    return not src_root.ignore.in_context(rel, is_dir)


def _excluded(rel_in_source: str, req: CopyRequest) -> bool:
    if not req.excludes or req.match is None:
        return False
    return any(_match_path(p, rel_in_source, req.match) for p in req.excludes)


def _match_path(pattern: str, rel: str, match) -> bool:
    """Match ``pattern`` against ``rel`` or any of its parent directories."""
    pat = [c for c in pattern.strip("/").split("/") if c]
    parts = rel.split("/")
    if "**" in pat:
        return _match_dstar(pat, parts, match)
    if len(parts) < len(pat):
        return False
    return all(match(p, n) for p, n in zip(pat, parts[: len(pat)]))


def _match_dstar(pat, parts, match) -> bool:
    # moby/patternmatcher@5a6d8429a19b Pattern.compile: "**/" stands for any number of
    # directories, none included ("**/*.pyc" matches "a.pyc"); a trailing "**" is the prefix
    # "dir/", so it needs something below ("cache/**" leaves the directory cache itself).
    if not pat:
        return True
    if pat[0] == "**":
        if len(pat) == 1:
            return bool(parts)
        return any(_match_dstar(pat[1:], parts[i:], match) for i in range(len(parts) + 1))
    return bool(parts) and match(pat[0], parts[0]) and _match_dstar(pat[1:], parts[1:], match)
