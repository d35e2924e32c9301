"""COPY and ADD: files from the context, an earlier stage, an image, a heredoc, a URL or an archive."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pybuildless.builder.chmod import parse_chmod
from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.step import StepContext
from pybuildless.builder.copy import CopyRequest, SourceRoot, copy_files
from pybuildless.dockerfile import instructions as ins
from pybuildless.errors import BuildError


def _match(pattern: str, name: str) -> bool:
    from pybuildless.dockerfile.pathmatch import match

    return match(pattern, name)


def _request(i, ctx, sources, *, chmod=None) -> CopyRequest:
    owner = None
    if i.chown:
        from pybuildless.fs.users import resolve_chown  # only --chown reads the stage's passwd/group

        owner = resolve_chown(ctx.root, i.chown)
    return CopyRequest(
        sources=list(sources), dest=i.dest, workdir=ctx.workdir, owner=owner,
        chmod=parse_chmod(i.chmod) if i.chmod else chmod, excludes=tuple(i.excludes),
        parents=getattr(i, "parents", False), match=_match,
    )


def _created_by(i, sources) -> str:
    return f"{i.keyword} {' '.join(sources)} {i.dest} # buildkit"


def _inline(i, ctx, tmp: str) -> tuple[SourceRoot, list[str]]:
    """Heredoc sources become files (mode 0644) in a temp dir."""
    names = []
    for src in i.inline:
        path = os.path.join(tmp, src.name)
        with open(path, "w") as f:
            f.write(src.data)
        os.chmod(path, 0o644)
        names.append(src.name)
    return SourceRoot(tmp, is_context=True, description="heredoc"), names


def copy(i: ins.Copy, ctx: StepContext) -> Outcome:
    if any(_is_url(s) for s in i.sources):
        raise i.error("source can't be a URL for COPY")
    touched: list[str] = []
    # --link: copy into an empty tree that becomes the layer on its own (BuildKit's rule: the
    # layer does not depend on what the stage holds, so it stays valid on another base).
    link_root = tempfile.mkdtemp(prefix="link-", dir=ctx.scratch_dir) if i.link else None
    target_root = link_root or str(ctx.root)
    with tempfile.TemporaryDirectory(dir=ctx.scratch_dir) as tmp:
        if i.inline:
            src, names = _inline(i, ctx, tmp)
            touched += copy_files(src, _request(i, ctx, names), target_root).touched
        if i.sources:
            src = ctx.sources.root(i.from_, i) if i.from_ else ctx.sources.context
            touched += copy_files(src, _request(i, ctx, i.sources), target_root).touched
    names = list(i.sources) + [s.name for s in i.inline]
    flags = (f"--from={i.from_} " if i.from_ else "") + ("--link " if i.link else "")
    return Outcome(f"COPY {flags}{' '.join(names)} {i.dest} # buildkit", snapshot=True, paths=tuple(touched),
                   layer_root=link_root)


# -- ADD ---------------------------------------------------------------------------------------


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _is_git(s: str) -> bool:
    return s.startswith("git@") or s.startswith("git://") or (
        _is_url(s) and urllib.parse.urlparse(s).path.split("#")[0].endswith(".git"))


def _download(url: str, tmp: str, checksum: str | None, i) -> str:
    import requests

    name = posixpath.basename(urllib.parse.urlparse(url).path) or "__unnamed__"
    path = os.path.join(tmp, name)
    h = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=(30, 300)) as r:
            if r.status_code != 200:
                raise i.error(f"ADD {url}: HTTP {r.status_code}")
            with open(path, "wb") as f:
                for chunk in r.raw.stream(1 << 20, decode_content=True):
                    h.update(chunk)
                    f.write(chunk)
            modified = r.headers.get("Last-Modified")
    except requests.RequestException as e:
        raise i.error(f"ADD {url}: {e.__class__.__name__}") from None
    if checksum:
        algo, _, want = checksum.partition(":")
        if algo != "sha256" or not want:
            raise i.error(f"ADD --checksum={checksum}: only sha256:<hex> is supported")
        if h.hexdigest() != want:
            raise i.error(f"ADD {url}: checksum mismatch: got sha256:{h.hexdigest()}, want {checksum}")
    if modified:
        from email.utils import parsedate_to_datetime

        try:
            ts = parsedate_to_datetime(modified).timestamp()
            os.utime(path, (ts, ts))
        except (TypeError, ValueError):
            pass
    os.chmod(path, 0o600)
    return name


def add(i: ins.Add, ctx: StepContext) -> Outcome:
    from pybuildless.builder.archives import is_tar_archive  # tar and its decompressors: ADD only

    gits = [s for s in i.sources if _is_git(s)]
    if gits and len(i.sources) != 1:
        raise i.error("ADD of a git repository takes exactly one source")
    if gits:
        return _add_git(i, ctx, gits[0])
    urls = [s for s in i.sources if _is_url(s)]
    if i.checksum and (len(i.sources) != 1 or not urls):
        raise i.error("--checksum can only be used with a single URL source")
    touched: list[str] = []
    unpack = is_tar_archive if i.unpack is not False else None
    with tempfile.TemporaryDirectory(dir=ctx.scratch_dir) as tmp:
        if i.inline:
            src, names = _inline(i, ctx, tmp)
            touched += copy_files(src, _request(i, ctx, names), str(ctx.root)).touched
        dl = os.path.join(tmp, "downloads")
        os.mkdir(dl)
        # One source after another, as BuildKit chains one copy action per source: what an
        # earlier source made (a directory at the destination) decides where a later one goes.
        for source in i.sources:
            if _is_url(source):
                name = _download(source, dl, i.checksum, i)
                # Downloads keep mode 0600 unless --chmod says otherwise; they are never unpacked.
                src = SourceRoot(dl, is_context=True, description="download")
                touched += copy_files(src, _request(i, ctx, [name]), str(ctx.root)).touched
            else:
                req = dataclasses.replace(_request(i, ctx, [source]), unpack=unpack)
                touched += copy_files(ctx.sources.context, req, str(ctx.root)).touched
    return Outcome(_created_by(i, list(i.sources) + [s.name for s in i.inline]), snapshot=True, paths=tuple(touched))


def _add_git(i: ins.Add, ctx, url: str) -> Outcome:
    from pybuildless.builder.commands.gitsource import fetch_git

    with tempfile.TemporaryDirectory(dir=ctx.scratch_dir) as tmp:
        try:
            source = fetch_git(url, Path(tmp) / "repo", keep_git_dir=bool(i.keep_git_dir), checksum=i.checksum)
        except BuildError as e:
            raise i.error(str(e)) from None
        src = SourceRoot(str(source), is_context=True, description=f"git repository {url}")
        touched = copy_files(src, _request(i, ctx, ["."]), str(ctx.root)).touched
    return Outcome(_created_by(i, [url]), snapshot=True, paths=tuple(touched))


# -- cache keys --------------------------------------------------------------------------------


def _common_key(i, ctx) -> list[str]:
    parts = [i.keyword, f"dest={i.dest}", f"workdir={ctx.workdir}", f"chown={i.chown}", f"chmod={i.chmod}",
             f"excludes={list(i.excludes)}", f"link={i.link}"]
    parts += [f"inline:{s.name}:{s.data}" for s in i.inline]
    return parts


def _context_digest(i, ctx, sources) -> str:
    from pybuildless.builder.copy import source_digest

    req = CopyRequest(sources=list(sources), dest=i.dest, workdir=ctx.workdir, excludes=tuple(i.excludes),
                      parents=getattr(i, "parents", False), match=_match)
    return source_digest(ctx.sources.context, req)


def copy_key_parts(i: ins.Copy, ctx: StepContext) -> list[str] | None:
    parts = _common_key(i, ctx) + [f"parents={i.parents}", *[f"src={s}" for s in i.sources]]
    if i.from_:
        origin = ctx.sources.key(i.from_)  # a stage's key, or an image's manifest digest
        if origin is None:
            return None  # a stage that could not be cached itself
        return parts + [f"from={origin}"]
    if i.sources:
        parts.append(_context_digest(i, ctx, i.sources))
    return parts


def add_key_parts(i: ins.Add, ctx: StepContext) -> list[str] | None:
    if any(_is_url(s) or _is_git(s) for s in i.sources) and not i.checksum:
        return None  # remote content may change: never cached
    # --keep-git-dir changes what a (checksummed, so cached) git source writes: BuildKit makes it an
    # attribute of the git source op (dockerfile2llb/convert_copy.go@73ed6825c4b7, llb.KeepGitDir)
    parts = _common_key(i, ctx) + [f"checksum={i.checksum}", f"unpack={i.unpack}", f"keep_git_dir={i.keep_git_dir}",
                                   *[f"src={s}" for s in i.sources]]
    local = [s for s in i.sources if not _is_url(s)]
    if local:
        parts.append(_context_digest(i, ctx, local))
    return parts


# -- the steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyStep:
    """COPY: files from the context, a stage or an image into the stage root."""

    instruction: ins.Copy
    touches_files: ClassVar[bool] = True

    def execute(self, ctx: StepContext) -> Outcome:
        return copy(self.instruction, ctx)

    def cache_key(self, ctx: StepContext) -> list[str] | None:
        return copy_key_parts(self.instruction, ctx)

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return config


@dataclass(frozen=True)
class AddStep:
    """ADD: like COPY, plus URLs, git repositories and local archives unpacked."""

    instruction: ins.Add
    touches_files: ClassVar[bool] = True

    def execute(self, ctx: StepContext) -> Outcome:
        return add(self.instruction, ctx)

    def cache_key(self, ctx: StepContext) -> list[str] | None:
        return add_key_parts(self.instruction, ctx)

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return config
