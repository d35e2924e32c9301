"""passwd/group lookup inside a root filesystem (USER and --chown)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuildless.errors import LayerSecurityError, PybuildlessError
from pybuildless.fs.users import ResolvedUser, UserLookupError, resolve_chown, resolve_user
from pybuildless.fs.inroot import resolve as resolve_in_root

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
user:x:1000:1000:User:/home/user:/bin/sh
broken line without fields
bad:x:notanumber:1:bad:/:/bin/sh
1234:x:4321:4321:numeric name:/n:/bin/sh
"""

GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:user,daemon
audio:x:29:user
users:x:100:
user:x:1000:
nogroup:x:65534:
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("", ResolvedUser(0, 0, (), "/root", "root")),
        ("root", ResolvedUser(0, 0, (), "/root", "root")),
        ("0", ResolvedUser(0, 0, (), "/root", "root")),
        ("user", ResolvedUser(1000, 1000, (10, 29), "/home/user", "user")),
        ("1000", ResolvedUser(1000, 1000, (10, 29), "/home/user", "user")),
        ("user:users", ResolvedUser(1000, 100, (), "/home/user", "user")),
        ("user:0", ResolvedUser(1000, 0, (), "/home/user", "user")),
        ("1000:29", ResolvedUser(1000, 29, (), "/home/user", "user")),
        ("nobody", ResolvedUser(65534, 65534, (), "/nonexistent", "nobody")),
        ("daemon", ResolvedUser(1, 1, (10,), "/usr/sbin", "daemon")),
        # numeric ids absent from passwd are fine: gid 0, home /
        ("4242", ResolvedUser(4242, 0, (), "/", "")),
        ("4242:4343", ResolvedUser(4242, 4343, (), "/", "")),
        ("4242:wheel", ResolvedUser(4242, 10, (), "/", "")),
        # a numeric spec is a uid even if some user is *named* like it
        ("1234", ResolvedUser(1234, 0, (), "/", "")),
        # empty group after the colon means "not given"
        ("user:", ResolvedUser(1000, 1000, (10, 29), "/home/user", "user")),
    ],
)
def test_resolve_user(root: Path, spec: str, expected: ResolvedUser) -> None:
    assert resolve_user(root, spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("ghost", "unable to find user 'ghost'"),
        ("user:ghosts", "unable to find group 'ghosts'"),
        ("a:b:c", "invalid user spec"),
        ("99999999999", "out of range"),
        ("bad", "unable to find user 'bad'"),  # its line is malformed, so skipped
    ],
)
def test_resolve_user_errors(root: Path, spec: str, message: str) -> None:
    with pytest.raises(UserLookupError, match=message) as info:
        resolve_user(root, spec)
    assert isinstance(info.value, PybuildlessError)
    assert f"USER {spec}" in str(info.value)


def test_scratch_root_without_passwd(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "root") == ResolvedUser(0, 0, (), "/root", "root")
    assert resolve_user(tmp_path, "1000:1000") == ResolvedUser(1000, 1000, (), "/", "")
    with pytest.raises(UserLookupError, match="no /etc/passwd in the image"):
        resolve_user(tmp_path, "app")
    with pytest.raises(UserLookupError, match="no /etc/group in the image"):
        resolve_chown(tmp_path, "10:staff")
    assert resolve_chown(tmp_path, "root") == (0, 0)
    assert resolve_chown(tmp_path, "10") == (10, 10)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("10", (10, 10)),
        ("10:20", (10, 20)),
        ("user", (1000, 1000)),
        ("user:wheel", (1000, 10)),
        ("user:", (1000, 0)),
        (":wheel", (0, 10)),
        ("4242", (4242, 4242)),
        ("root", (0, 0)),
        ("nobody:audio", (65534, 29)),
        ("1000:nogroup", (1000, 65534)),
    ],
)
def test_resolve_chown(root: Path, spec: str, expected: tuple[int, int]) -> None:
    assert resolve_chown(root, spec) == expected


@pytest.mark.parametrize("spec", ["ghost", "user:ghosts", "", "x:y:z"])
def test_resolve_chown_errors(root: Path, spec: str) -> None:
    with pytest.raises(UserLookupError, match=f"--chown={spec}"):
        resolve_chown(root, spec)


def test_symlinked_passwd_stays_in_root(tmp_path: Path) -> None:
    """An image whose /etc/passwd points at an absolute path reads the *image's* file."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text("evil:x:7:7::/evil:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "srv").mkdir()
    (root / "srv/passwd").write_text("app:x:500:500::/app:/bin/sh\n")
    # absolute link to the host file's path: must resolve inside root instead
    os.symlink(str(host / "passwd"), root / "etc/passwd")
    with pytest.raises(UserLookupError):
        resolve_user(root, "evil")
    os.unlink(root / "etc/passwd")
    os.symlink("../../../../../../../srv/passwd", root / "etc/passwd")
    assert resolve_user(root, "app").uid == 500
    # a symlinked /etc directory is also resolved in-root
    os.unlink(root / "etc/passwd")
    os.rmdir(root / "etc")
    os.symlink(str(host), root / "etc")
    with pytest.raises(UserLookupError, match="no /etc/passwd"):
        resolve_user(root, "evil")


def test_passwd_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/passwd")
    with pytest.raises(LayerSecurityError, match="not a regular file"):
        resolve_user(tmp_path, "user")


def test_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("passwd", tmp_path / "etc/passwd")
    with pytest.raises(LayerSecurityError, match="too many levels"):
        resolve_user(tmp_path, "user")


@pytest.mark.parametrize(
    "links, path, expected",
    [
        ({"a": "/b"}, "/a/c", "b/c"),
        ({"a": "../../../b"}, "/a/c", "b/c"),
        ({"a": "b/c"}, "/a/../x", "b/x"),
        ({}, "/missing/../etc", "etc"),
        ({"etc": "/real"}, "/missing/../etc/x", "real/x"),
        ({}, "/../../x/./y/", "x/y"),
    ],
)
def test_resolve_in_root(tmp_path: Path, links: dict[str, str], path: str, expected: str) -> None:
    (tmp_path / "b/c").mkdir(parents=True)
    (tmp_path / "real").mkdir()
    for name, target in links.items():
        os.symlink(target, tmp_path / name)
    assert resolve_in_root(tmp_path, path) == tmp_path / expected


def test_resolve_in_root_final_link_not_followed(tmp_path: Path) -> None:
    os.symlink("/elsewhere", tmp_path / "link")
    assert resolve_in_root(tmp_path, "/link", follow_final=False) == tmp_path / "link"
    assert resolve_in_root(tmp_path, "/link") == tmp_path / "elsewhere"
