"""Whiteouts (OCI image-spec layer.md): ``.wh.NAME`` hides NAME of the lower layers,
``.wh..wh..opq`` hides every lower-layer child of its directory.

A whiteout only ever hides lower layers: entries of the layer being applied
survive, whatever their order in the tar. Missing targets are ignored (real
images carry such whiteouts); ignored paths and their ancestors are never
removed.
"""

from __future__ import annotations

import os
import posixpath
import stat

from pybuildless.errors import LayerSecurityError
from pybuildless.fs import secure

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def apply_whiteout(applier, parent: str, base: str) -> None:
    """Apply the whiteout entry ``parent/base`` (``applier`` is the layer being applied)."""
    applier.counts.whiteouts += 1
    if base == OPAQUE_MARKER:
        _apply_opaque(applier, parent)
        return
    if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
        return  # aufs metadata (.wh..wh.plnk...), not a deletion
    victim = base[len(WHITEOUT_PREFIX):]
    if victim in ("", ".", ".."):
        raise LayerSecurityError(f"invalid whiteout {posixpath.join(parent, base)!r}")
    rel = posixpath.join(parent, victim) if parent else victim
    if rel in applier.layer_paths or rel in applier.layer_ancestors:
        # This layer already wrote the path (or something below it): the whiteout came after
        # it in the tar. It still hides the lower content, as if it had come first, and never
        # this layer's own entries (a directory keeps them, a file or link is left alone).
        if _is_real_dir(applier, parent, victim):
            _apply_opaque(applier, rel)
        return
    try:
        pfd, preal = applier.parent(parent, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing to hide: real images carry such whiteouts
    vabs = applier._abs(preal, victim)
    if applier.ignore and applier.ignore.is_ignored(vabs):
        return
    applier._touch(parent, pfd)
    keep = None
    if applier.ignore:
        keep = lambda path: ("keep" if applier.ignore.is_ignored(path)  # noqa: E731
                             else "descend" if applier.ignore.contains_ignored(path) else None)
    secure.remove_in_dir(pfd, victim, keep=keep, prefix=preal if applier.ignore else "")
    applier._drop_cache_keep(-1)


def _is_real_dir(applier, parent: str, name: str) -> bool:
    """``parent/name`` is a directory itself, not a symlink to one (never followed here)."""
    try:
        pfd, _ = applier.parent(parent, create=False)
        return stat.S_ISDIR(os.lstat(name, dir_fd=pfd).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _apply_opaque(applier, dir_rel: str) -> None:
    """Remove the lower-layer content of ``dir_rel``; this layer's entries stay."""
    try:
        dfd, dreal = applier.parent(dir_rel, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    applier._touch(dir_rel, dfd)
    prefix_len = len(dir_rel) + 1 if dir_rel else 0

    def keep(path: str) -> str | None:
        # path is the literal layer path; its resolved form only matters for the ignore list
        if applier.ignore:
            absolute = posixpath.join(dreal, path[prefix_len:])
            if applier.ignore.is_ignored(absolute):
                return "keep"
            if applier.ignore.contains_ignored(absolute):
                return "descend"
        if path in applier.layer_paths or path in applier.layer_ancestors:
            return "descend"  # from this layer: keep it, prune lower content below it
        return None

    rd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        for child in os.listdir(rd):
            secure.remove_in_dir(rd, child, keep=keep, prefix=dir_rel)
    finally:
        os.close(rd)
    applier._drop_cache_keep(-1)
