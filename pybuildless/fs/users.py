"""User and group lookup against a root filesystem's /etc/passwd and /etc/group.

Never the host's databases (no ``pwd``/``grp``): ``USER`` and ``--chown`` are
resolved against the stage being built, at the time they are used
(dockerfile-semantics.md §6.4, §6.6, §6.8). The files are read with an in-root
walk so a symlinked ``/etc/passwd`` in a hostile image cannot point at the
builder's own files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pybuildless.errors import PybuildlessError
from pybuildless.fs import inroot

log = logging.getLogger(__name__)

# uid_t is 32 bits and (uid_t)-1 means "no change" to the kernel.
MAX_ID = 2**32 - 2


class UserLookupError(PybuildlessError):
    """A user or group named in USER or --chown does not exist, or the spec is malformed."""


@dataclass(frozen=True)
class ResolvedUser:
    """A USER value resolved against the image's /etc/passwd and /etc/group."""

    uid: int
    gid: int
    supplementary_gids: tuple[int, ...] = ()
    home: str = "/"
    name: str = ""


@dataclass(frozen=True)
class PasswdEntry:
    """One line of an /etc/passwd file."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    """One line of an /etc/group file."""

    name: str
    gid: int
    members: tuple[str, ...]


ROOT_USER = ResolvedUser(uid=0, gid=0, supplementary_gids=(), home="/root", name="root")


def _parse_id(text: str, what: str = "") -> int | None:
    """A decimal id, or None when ``text`` is a name."""
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    if value > MAX_ID:
        prefix = f"{what}: " if what else ""
        raise UserLookupError(f"{prefix}id {text} is out of range (maximum {MAX_ID})")
    return value


def _lines(data: bytes | None) -> list[list[str]]:
    if data is None:
        return []
    rows = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        rows.append(line.split(":"))
    return rows


def read_passwd(root: Path) -> list[PasswdEntry] | None:
    """The entries of ``root``'s /etc/passwd; ``None`` when the file is missing.

    Malformed lines are skipped, as libc and runc do.
    """
    data = inroot.read_file(root, "/etc/passwd")
    if data is None:
        return None
    entries = []
    for fields in _lines(data):
        if len(fields) < 4:
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        home = fields[5] if len(fields) > 5 else ""
        shell = fields[6] if len(fields) > 6 else ""
        entries.append(PasswdEntry(fields[0], uid, gid, home, shell))
    return entries


def read_group(root: Path) -> list[GroupEntry] | None:
    data = inroot.read_file(root, "/etc/group")
    if data is None:
        return None
    entries = []
    for fields in _lines(data):
        if len(fields) < 3:
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def _find_user(spec: str, passwd: list[PasswdEntry] | None, what: str) -> PasswdEntry | None:
    uid = _parse_id(spec, what)
    for entry in passwd or ():
        if (uid is not None and entry.uid == uid) or (uid is None and entry.name == spec):
            return entry
    return None


def _lookup_group(spec: str, groups: list[GroupEntry] | None, *, what: str) -> int:
    gid = _parse_id(spec, what)
    if gid is not None:
        return gid
    for entry in groups or ():
        if entry.name == spec:
            return entry.gid
    if spec == "root":
        return 0
    where = "no /etc/group in the image" if groups is None else "no matching entry in /etc/group"
    raise UserLookupError(f"{what}: unable to find group {spec!r}: {where}")


def _split_spec(spec: str, what: str) -> tuple[str, str | None]:
    spec = spec.strip()
    if spec.count(":") > 1:
        raise UserLookupError(f"{what}: invalid user spec {spec!r} (expected user[:group])")
    user, sep, group = spec.partition(":")
    return user, (group if sep else None)


def resolve_user(root: Path, spec: str) -> ResolvedUser:
    """Resolve ``USER`` (``name``, ``uid``, ``name:group``, ``uid:gid``...) for a RUN.

    With an explicit group only that group applies (supplementary groups are
    dropped); without one the primary group comes from passwd (0 when the uid
    has no entry) plus every group listing the user as a member. An unknown
    *name* is an error; an unknown numeric id is allowed, as in Docker.
    """
    what = f"USER {spec}"
    user_part, group_part = _split_spec(spec, what)
    if not user_part and not group_part:
        user_part = "root"
    elif not user_part:
        user_part = "0"
    passwd = read_passwd(root)
    entry = _find_user(user_part, passwd, what)
    uid = _parse_id(user_part, what)
    if entry is None and uid is None:
        if user_part == "root":
            uid = 0
        else:
            where = "no /etc/passwd in the image" if passwd is None else "no matching entry in /etc/passwd"
            raise UserLookupError(f"{what}: unable to find user {user_part!r}: {where}")
    if entry is not None:
        uid = entry.uid
    assert uid is not None
    name = entry.name if entry else ("root" if uid == 0 else "")
    home = entry.home if entry and entry.home else ("/root" if uid == 0 else "/")
    groups = read_group(root)
    if group_part:
        gid = _lookup_group(group_part, groups, what=what)
        return ResolvedUser(uid=uid, gid=gid, supplementary_gids=(), home=home, name=name)
    gid = entry.gid if entry else 0
    supplementary: list[int] = []
    if name:
        for group in groups or ():
            if name in group.members and group.gid != gid and group.gid not in supplementary:
                supplementary.append(group.gid)
    return ResolvedUser(uid=uid, gid=gid, supplementary_gids=tuple(supplementary), home=home, name=name)


def resolve_chown(root: Path, spec: str, *, flag: str = "--chown") -> tuple[int, int]:
    """Resolve ``COPY/ADD --chown=user[:group]`` to numeric (uid, gid).

    BuildKit's rules: a bare numeric uid gets the same gid (``--chown=10`` →
    10:10); a bare name gets its primary group; ``user:`` gets group 0
    (buildkit #3555); ``:group`` keeps uid 0; ``root`` is 0 even without a
    passwd file. Unknown names fail the build (the safer of the documented
    behaviours), numeric ids absent from passwd are fine (kaniko #1456).
    """
    what = f"{flag}={spec}"
    user_part, group_part = _split_spec(spec, what)
    if not user_part and not group_part:
        raise UserLookupError(f"{what}: empty user")
    if user_part:
        uid = _parse_id(user_part, what)
        passwd = read_passwd(root) if uid is None else None
        if uid is None:
            entry = _find_user(user_part, passwd, what)
            if entry is None:
                if user_part != "root":
                    where = "no /etc/passwd in the image" if passwd is None else "no matching entry in /etc/passwd"
                    raise UserLookupError(f"{what}: unable to find user {user_part!r}: {where}")
                uid, primary = 0, 0
            else:
                uid, primary = entry.uid, entry.gid
        else:
            primary = uid
    else:
        uid, primary = 0, 0
    if group_part is None:
        return uid, primary
    if group_part == "":
        return uid, 0
    return uid, _lookup_group(group_part, read_group(root), what=what)
