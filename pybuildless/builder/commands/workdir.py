"""WORKDIR: set the config's WorkingDir and create the directory, owned by the current USER."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.step import StepContext, with_container_config
from pybuildless.dockerfile import instructions as ins
from pybuildless.fs import inroot
from pybuildless.fs.users import resolve_chown, resolve_user


def make_dirs(st, path: str, owner_of: Callable[[], tuple[int, int] | None] | None = None) -> list[str]:
    """mkdir -p ``path`` inside the stage root; new directories are 0755 and belong to
    ``owner_of()`` (asked once, only when something is made), by default USER's uid and
    primary group (BuildKit PR #1002)."""
    def owner() -> tuple[int, int]:
        if owner_of is not None:
            return owner_of()
        u = resolve_user(st.root, st.user)
        return (u.uid, u.gid)

    return inroot.makedirs(st.root, path, mode=0o755, owner=owner)


def set_workdir(i: ins.Workdir, st) -> str:
    """WORKDIR's config change; also applied when the step's layer comes from the cache."""
    st.stage.config = WorkdirStep(i).config_effect(st.config)
    return st.workdir


def workdir_owner(st) -> tuple[int, int] | None:
    """Who owns the directories WORKDIR makes: USER read as a ``--chown`` value.

    BuildKit v0.8 (dockerfile2llb/convert.go@eeb7b65ab7d6 dispatchWorkdir) makes them with
    ``llb.Mkdir(wd, 0755, WithParents, WithUser(config.User))``; WithUser (client/llb/fileop.go)
    turns a numeric user into a uid, and solver/llbsolver/file/user_linux.go readUser gives a
    uid-only user the same number as gid (``USER 4242`` -> 4242:4242, passwd or not), a name its
    passwd uid and gid. No USER: no chown (None): root, with the group and set-group-ID bit of a
    set-group-ID parent, as mkdir(2) makes it (tonistiigi/fsutil copy/mkdir.go MkdirAll, vendored in
    moby v20.10.24 and moby/buildkit@73ed6825c4b7: os.Mkdir, then Chown only with a user).
    """
    user = st.container_config.get("User") or ""
    if not user:
        return None
    return resolve_chown(st.root, user, flag="USER")


def workdir(i: ins.Workdir, st) -> Outcome:
    path = set_workdir(i, st)
    created = make_dirs(st, path, lambda: workdir_owner(st))
    return Outcome(f"WORKDIR {path}", snapshot=bool(created), paths=tuple(created) or None)


def key_parts(i: ins.Workdir, st) -> list[str]:
    return ["WORKDIR", posixpath.normpath(posixpath.join(st.workdir, i.value)), f"user={st.user}"]


@dataclass(frozen=True)
class WorkdirStep:
    """WORKDIR: the working directory set, and created in the root when missing."""

    instruction: ins.Workdir
    touches_files: ClassVar[bool] = True

    def execute(self, ctx: StepContext) -> Outcome:
        return workdir(self.instruction, ctx)

    def cache_key(self, ctx: StepContext) -> list[str] | None:
        return key_parts(self.instruction, ctx)

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        """A relative path joins the WORKDIR before it; the result is clean (BuildKit's
        dispatchWorkdir: path.Join onto Config.WorkingDir, "/" when there is none)."""
        current = (config.get("config") or {}).get("WorkingDir") or "/"
        return with_container_config(config, WorkingDir=posixpath.normpath(posixpath.join(current, self.instruction.value)))
