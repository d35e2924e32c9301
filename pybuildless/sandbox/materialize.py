"""RUN --mount without a mount namespace: the mount's content is put at its target for the step.

In an unprivileged container with Docker's default seccomp profile there is
neither CAP_SYS_ADMIN nor a user namespace, so nothing can be mounted. Kaniko
mode must still honour ``RUN --mount=type=secret`` (the documented way to
pass credentials to a step without baking them into a layer), and bind,
cache and tmpfs mounts as far as they can be imitated:

* a file (a secret, a single bound file) is copied into a stub made at the
  target, with the source's mode, owner and content; removed after the step;
* a directory (a context subtree, another stage's files, a cache) is copied
  into a stub directory; emptied and removed after the step. A writable cache
  mount's content is copied back to the cache first, so later steps and
  builds see what this one left there;
* a tmpfs is an empty stub directory, emptied and removed after the step.

The stubs are made by ``prepare_extra_mounts`` (missing targets only) or
are empty directories the build made as mount points; any other target that
exists in the image cannot be imitated without changing the layer, so that
is refused with a clear error. Everything put in place is
gone before the snapshot, so none of it reaches the layer.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Sequence

from pybuildless.errors import SandboxError
from pybuildless.sandbox.extra_mounts import PreparedMount

log = logging.getLogger(__name__)
_announced = False


def _announce() -> None:
    global _announced
    if not _announced:
        _announced = True
        log.info("RUN --mount without a mount namespace: each mount's content is copied to its target "
                 "for the step and removed after it (cache mounts are copied back)")


def _copy_file(source: Path, target: Path) -> None:
    st = os.stat(source)
    fd = os.open(target, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    try:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, os.fdopen(os.dup(fd), "wb"))
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)


def _empty(directory: Path) -> None:
    """Remove what is inside ``directory`` (never following a link the step put there)."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(directory)
        return
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def put_in_place(prepared: Sequence[PreparedMount], created: Sequence[Path], placed: list[PreparedMount]) -> None:
    """Copy each mount's content to its stub (made by ``prepare_extra_mounts``).

    Once every target is known to be usable they are appended to ``placed``: what
    ``take_away`` must clear even if a copy fails half-way."""
    made = set(created)
    for pm in prepared:
        m = pm.mount
        # An empty directory can be filled and emptied again; anything else of the image's
        # would be changed in the layer.
        usable = pm.host_target in made or (pm.directory and not any(os.scandir(pm.host_target)))
        if not usable:
            raise SandboxError(f"RUN --mount type={m.kind},target={m.target}: without a mount namespace "
                               "the target must be missing or an empty directory in the image "
                               "(nothing can be mounted over it here)")
    _announce()
    placed.extend(prepared)
    for pm in prepared:
        m = pm.mount
        if m.kind != "bind" or m.source is None:
            continue
        if pm.directory:
            shutil.copytree(m.source, pm.host_target, symlinks=True, dirs_exist_ok=True)
        else:
            _copy_file(m.source, pm.host_target)


def take_away(prepared: Sequence[PreparedMount]) -> None:
    """After the step: copy writable directory mounts back to their source, then empty the stubs
    (innermost first), so that ``remove_created`` can remove them."""
    for pm in sorted(prepared, key=lambda pm: len(pm.host_target.parts), reverse=True):
        m = pm.mount
        target = pm.host_target
        if m.kind == "bind" and m.source is not None and pm.directory and not m.readonly:
            if os.path.isdir(target) and not os.path.islink(target):
                _empty(m.source)
                shutil.copytree(target, m.source, symlinks=True, dirs_exist_ok=True)
            else:
                log.warning("RUN --mount target %s is no longer a directory after the step; "
                            "its content is not kept", m.target)
        if pm.directory:
            _empty(target)
        elif os.path.lexists(target):
            os.unlink(target)
