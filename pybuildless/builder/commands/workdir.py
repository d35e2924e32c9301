"""WORKDIR: set the config's WorkingDir and create the directory, owned by the current USER."""

from __future__ import annotations

import os
import posixpath
from typing import Callable

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.dockerfile import instructions as ins
from pybuildless.fs.rootpath import resolve_in_root
from pybuildless.fs.users import resolve_chown, resolve_user


def make_dirs(st, path: str, owner_of: Callable[[], tuple[int, int]] | None = None) -> list[str]:
    """mkdir -p ``path`` inside the stage root; new directories are 0755 and belong to
    ``owner_of()`` (asked once, only when something is made), by default USER's uid and
    primary group (BuildKit PR #1002)."""
    created: list[str] = []
    owner = None
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = posixpath.join(current, part)
        host = resolve_in_root(st.root, current)
        if host.is_dir():
            continue
        if owner is None and owner_of is not None:
            owner = owner_of()
        elif owner is None:
            u = resolve_user(st.root, st.user)
            owner = (u.uid, u.gid)
        os.mkdir(host, 0o755)
        os.chmod(host, 0o755)
        os.lchown(host, *owner)
        created.append(current)
    return created


def set_workdir(i: ins.Workdir, st) -> str:
    """WORKDIR's config change; also applied when the step's layer comes from the cache."""
    path = posixpath.normpath(posixpath.join(st.workdir, i.value))
    st.container_config["WorkingDir"] = path
    return path


def workdir_owner(st) -> tuple[int, int]:
    """Who owns the directories WORKDIR makes: USER read as a ``--chown`` value.

    BuildKit v0.8 (dockerfile2llb/convert.go@eeb7b65ab7d6 dispatchWorkdir) makes them with
    ``llb.Mkdir(wd, 0755, WithParents, WithUser(config.User))``; WithUser (client/llb/fileop.go)
    turns a numeric user into a uid, and solver/llbsolver/file/user_linux.go readUser gives a
    uid-only user the same number as gid (``USER 4242`` -> 4242:4242, passwd or not), a name its
    passwd uid and gid. No USER: no chown, 0:0.
    """
    user = st.container_config.get("User") or ""
    if not user:
        return (0, 0)
    return resolve_chown(st.root, user, flag="USER")


def workdir(i: ins.Workdir, st) -> Outcome:
    path = set_workdir(i, st)
    created = make_dirs(st, path, lambda: workdir_owner(st))
    return Outcome(f"WORKDIR {path}", snapshot=bool(created), paths=tuple(created) or None)


def key_parts(i: ins.Workdir, st) -> list[str]:
    return ["WORKDIR", posixpath.normpath(posixpath.join(st.workdir, i.value)), f"user={st.user}"]
