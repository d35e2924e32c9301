"""RUN --mount: turn the Dockerfile's mount specs into sandbox mounts for one step.

- ``bind``: a subtree of the context (after .dockerignore), of an earlier stage or of
  an image; read-only by default; writes never reach the source (a copy is mounted);
- ``cache``: a directory kept between builds under the cache directory, keyed by
  ``id`` (default: the target), never part of the image; steps using the same cache
  are serialised with a lock (``sharing`` is accepted; ``private`` gets a fresh dir);
- ``tmpfs``: a fresh tmpfs;
- ``secret``: a file (mode 0400 by default) or, with ``env=``, an environment
  variable; from ``--secret id=ID,src=PATH`` or ``--secret id=ID,env=VAR``; missing
  secrets are skipped unless ``required``. Secrets never enter a layer, the config,
  the history or a log.

``key_parts`` says what of the mounts decides a RUN's result for the layer cache
(BuildKit's rule): a bind mount's content (hashed like a COPY source) or the key
of the stage it comes from; a cache or tmpfs mount's options, never its
content; a secret's id and placement, never its value.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pybuildless.builder.copy import CopyRequest, copy_files, resolve_sources, source_digest
from pybuildless.dockerfile.mounts import Mount as MountSpec
from pybuildless.errors import BuildError
from pybuildless.log import register_secret
from pybuildless.sandbox import Mount
from pybuildless.fs import inroot

_SIZE = re.compile(r"^(\d+)([kmg]?)b?$", re.I)


@dataclass
class PreparedMounts:
    """A RUN's --mount options made ready: the mounts, the variables they set, and what to undo."""

    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


def _target(spec: MountSpec, st) -> str:
    if not spec.target:
        raise BuildError("RUN --mount: target is required")
    return posixpath.normpath(posixpath.join(st.workdir, spec.target))


def _tmp(st, stack: contextlib.ExitStack, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=st.scratch_dir))
    stack.callback(shutil.rmtree, path, True)
    return path


def _bind_request(spec: MountSpec) -> CopyRequest:
    return CopyRequest(sources=[spec.source or "."], dest="/", workdir="/", match=_match)


def _bind(spec: MountSpec, st, i, out: PreparedMounts) -> None:
    source = st.sources.root(spec.from_, i) if spec.from_ else st.sources.context
    copy = _tmp(st, out.stack, "bind-")
    # A filtered copy: .dockerignore applies, and writes are discarded with the copy.
    req = _bind_request(spec)
    copy_files(source, req, str(copy))
    mounted = copy
    found = resolve_sources(source, req)
    if len(found) == 1 and found[0][0] != "." and not inroot.is_dir(source.root, found[0][0]):
        mounted = copy / posixpath.basename(found[0][0])  # a file is bound as the file, not in a directory
    out.mounts.append(Mount(target=_target(spec, st), source=mounted, kind="bind", readonly=spec.readonly))


def _match(pattern: str, name: str) -> bool:
    from pybuildless.dockerfile.pathmatch import match

    return match(pattern, name)


def _cache(spec: MountSpec, st, out: PreparedMounts) -> None:
    target = _target(spec, st)
    ident = spec.id or target
    base = st.run_cache_dir
    name = hashlib.sha256(ident.encode()).hexdigest()[:32]
    if spec.sharing == "private":
        path = _tmp(st, out.stack, "cache-private-")
    else:
        path = base / name
        fresh = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        if fresh:
            os.chmod(path, spec.mode if spec.mode is not None else 0o755)
            os.chown(path, spec.uid or 0, spec.gid or 0)
        lock = open(base / f"{name}.lock", "w")
        out.stack.callback(lock.close)
        fcntl.flock(lock, fcntl.LOCK_EX)
    out.mounts.append(Mount(target=target, source=path, kind="bind", readonly=spec.readonly))


def _tmpfs(spec: MountSpec, st, out: PreparedMounts) -> None:
    size = None
    if spec.size:
        m = _SIZE.match(spec.size.strip())
        if not m:
            raise BuildError(f"RUN --mount=type=tmpfs: invalid size {spec.size!r}")
        size = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    out.mounts.append(Mount(target=_target(spec, st), kind="tmpfs", tmpfs_size=size))


def _secret(spec: MountSpec, st, out: PreparedMounts) -> None:
    ident = spec.id or (posixpath.basename(spec.target) if spec.target else None)
    if not ident:
        raise BuildError("RUN --mount=type=secret: id or target is required")
    value = st.secrets.get(ident)
    if value is None:
        if spec.required:
            raise BuildError(f"RUN --mount=type=secret,id={ident}: required secret not provided (use --secret)")
        return
    register_secret(value.decode(errors="replace"))
    if spec.env:
        out.env[spec.env] = value.decode()
        if not spec.target:
            return
    directory = _tmp(st, out.stack, "secret-")
    path = directory / "secret"
    path.write_bytes(value)
    os.chmod(path, spec.mode if spec.mode is not None else 0o400)
    os.chown(path, spec.uid or 0, spec.gid or 0)
    target = spec.target or f"/run/secrets/{ident}"
    out.mounts.append(Mount(target=posixpath.join(st.workdir, target), source=path, kind="bind", readonly=True))


def prepare(i, st) -> PreparedMounts:
    """Mounts and extra environment for RUN ``i``; ``.stack`` releases them after the step."""
    out = PreparedMounts()
    try:
        for spec in i.expanded_mounts(st.vars.expansion_env()):
            if spec.type == "bind":
                _bind(spec, st, i, out)
            elif spec.type == "cache":
                _cache(spec, st, out)
            elif spec.type == "tmpfs":
                _tmpfs(spec, st, out)
            elif spec.type == "secret":
                _secret(spec, st, out)
            else:
                raise i.error(f"RUN --mount=type={spec.type} is not supported")
    except BuildError as e:  # located errors (DockerfileError) pass through untouched
        out.stack.close()
        raise i.error(str(e)) from None
    except BaseException:
        out.stack.close()
        raise
    return out


def key_parts(i, st) -> list[str] | None:
    """The cache-key parts of RUN ``i``'s mounts; None when the step cannot be cached
    (a bind from an image by tag, whose content can change under the same name)."""
    parts: list[str] = []
    for spec in i.expanded_mounts(st.vars.expansion_env()):
        target = _target(spec, st) if spec.target else ""
        if spec.type == "bind":
            if spec.from_:
                origin = st.sources.key(spec.from_)
                if origin is None:
                    return None
                content = f"from={origin}"
            else:
                content = f"context={source_digest(st.sources.context, _bind_request(spec))}"
            parts.append(f"mount=bind,target={target},source={spec.source},rw={not spec.readonly},{content}")
        elif spec.type == "cache":
            parts.append(f"mount=cache,target={target},id={spec.id},sharing={spec.sharing},mode={spec.mode},"
                         f"uid={spec.uid},gid={spec.gid},ro={spec.readonly}")
        elif spec.type == "tmpfs":
            parts.append(f"mount=tmpfs,target={target},size={spec.size}")
        elif spec.type == "secret":
            parts.append(f"mount=secret,id={spec.id},target={spec.target},env={spec.env},mode={spec.mode},"
                         f"uid={spec.uid},gid={spec.gid},required={spec.required}")
        else:
            return None
    return parts
