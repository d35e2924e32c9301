"""WORKDIR: set the config's WorkingDir and create the directory, owned by the current USER."""

from __future__ import annotations

import os
import posixpath

from pybuildless.build.commands import Outcome
from pybuildless.dockerfile import instructions as ins
from pybuildless.fs.users import resolve_user
from pybuildless.sandbox.rootpath import resolve_in_root


def make_dirs(st, path: str) -> list[str]:
    """mkdir -p ``path`` inside the stage root; new directories belong to USER (BuildKit PR #1002)."""
    created: list[str] = []
    owner = None
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = posixpath.join(current, part)
        host = resolve_in_root(st.root, current)
        if host.is_dir():
            continue
        if owner is None:
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


def workdir(i: ins.Workdir, st) -> Outcome:
    path = set_workdir(i, st)
    created = make_dirs(st, path)
    return Outcome(f"WORKDIR {path}", snapshot=bool(created), paths=tuple(created) or None)


def key_parts(i: ins.Workdir, st) -> list[str]:
    return ["WORKDIR", posixpath.normpath(posixpath.join(st.workdir, i.value)), f"user={st.user}"]
