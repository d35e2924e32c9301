"""fs.inroot: resolving, making directories, mount stubs and reading inside a root that a
RUN step may have filled with hostile symlinks. Nothing outside the root may change.

Expected semantics come from a chroot (what the kernel's openat2 RESOLVE_IN_ROOT does, and
``chroot ROOT mkdir -p``) and, for the owners and modes of made directories, from BuildKit:
tonistiigi/fsutil copy/mkdir.go MkdirAll (vendored in moby/buildkit@73ed6825c4b7) chmods and
chowns only the directories it creates (``createdDirs``), and copy/copy.go Copy creates a
COPY's missing parents with ``defaultDirectoryMode`` 0755 and the ``--chown`` owner.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuildless.builder.copy import CopyRequest, SourceRoot, copy_files
from pybuildless.errors import LayerSecurityError
from pybuildless.fs import inroot
from pybuildless.fs.mountinfo import parse_mountinfo
from tests.fs_hostile import fingerprint
from tests.test_fs_hostile import resolver  # noqa: F401  (each test runs with openat2 and with the walk)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): a stage root and a canary directory next to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    (outside / "etc").mkdir(parents=True)
    (outside / "etc/passwd").write_text("host:x:0:0::/:/bin/sh\n")
    (outside / "secret").write_text("host secret")
    return root, outside


def _escapes(root: Path, outside: Path) -> dict[str, str]:
    """Symlinks a RUN step can leave, each aiming at ``outside`` some way."""
    up = "../" * (len(root.parts) + 2)
    return {
        "abs": str(outside),                          # absolute host path
        "dotdot": f"{up}{str(outside).lstrip('/')}",  # a .. chain longer than the root is deep
        "rel": "../../outside",                       # relative, one step above the root
    }


# -- resolve -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["abs", "dotdot", "rel"])
def test_resolve_keeps_symlinks_inside(world, kind: str) -> None:
    root, outside = world
    os.symlink(_escapes(root, outside)[kind], root / "link")
    host = inroot.resolve(root, "/link/etc/passwd")
    assert root in host.parents
    if kind == "abs":
        assert host == root.joinpath(str(outside).lstrip("/"), "etc/passwd")
    if kind == "rel":
        assert host == root / "outside/etc/passwd"  # .. stops at the root


def test_resolve_symlinked_parent_and_final(world) -> None:
    root, _ = world
    (root / "real/sub").mkdir(parents=True)
    os.symlink("/real", root / "parent")
    os.symlink("sub", root / "real/final")
    assert inroot.resolve(root, "/parent/final") == root / "real/sub"
    assert inroot.resolve(root, "/parent/final", follow_final=False) == root / "real/final"
    assert inroot.resolve(root, "parent/../etc") == root / "etc"  # .. after a link: from its target's parent


def test_resolve_loop_is_an_error(world) -> None:
    root, _ = world
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(LayerSecurityError, match="too many levels"):
        inroot.resolve(root, "/a/x")


def test_lstat_and_is_dir(world) -> None:
    root, outside = world
    os.symlink(str(outside), root / "out")
    assert inroot.Root(root).lstat("/out/secret") is None  # the host's file is not seen
    os.symlink("/etc", root / "etclink")
    with inroot.Root(root) as r:
        assert r.is_dir("/etclink")
        assert stat.S_ISLNK(r.lstat("/etclink", follow_final=False).st_mode)
        assert not r.is_dir("/missing")


# -- makedirs --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["abs", "dotdot", "rel"])
def test_makedirs_through_planted_links_stays_inside(world, kind: str) -> None:
    root, outside = world
    before = fingerprint(outside)
    os.symlink(_escapes(root, outside)[kind], root / "app")
    made = inroot.makedirs(root, "/app/etc/new/deeper", owner=(0, 0))
    assert fingerprint(outside) == before
    assert made[-1].endswith("/etc/new/deeper")  # in-root paths, parents first
    assert all((root / p.lstrip("/")).is_dir() for p in made)
    target = inroot.resolve(root, "/app/etc/new/deeper")
    assert target.is_dir() and root in target.parents


def test_makedirs_sets_owner_and_mode_of_made_dirs_only(world) -> None:
    root, _ = world
    (root / "srv").mkdir(mode=0o700)
    os.chmod(root / "srv", 0o700)
    os.chown(root / "srv", 4000, 4000)
    asked: list[int] = []

    def owner() -> tuple[int, int]:
        asked.append(1)
        return (1234, 5678)

    old = os.umask(0o077)  # the mode is what was asked for, whatever the umask
    try:
        made = inroot.makedirs(root, "/srv/a/b", mode=0o755, owner=owner)
    finally:
        os.umask(old)
    assert made == ["/srv/a", "/srv/a/b"]
    assert asked == [1]  # asked once, for the first directory made
    existing = os.stat(root / "srv")
    assert (stat.S_IMODE(existing.st_mode), existing.st_uid, existing.st_gid) == (0o700, 4000, 4000)
    for rel in ("srv/a", "srv/a/b"):
        st = os.stat(root / rel)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 1234, 5678)
    assert inroot.makedirs(root, "/srv/a/b", owner=owner) == []
    assert asked == [1]  # nothing made, nobody asked


def test_makedirs_without_owner_keeps_the_callers(world) -> None:
    root, _ = world
    inroot.makedirs(root, "/x/y", mode=0o750)
    st = os.stat(root / "x/y")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o750, os.getuid())


def test_makedirs_refuses_a_file_in_the_way(world) -> None:
    root, _ = world
    (root / "etc/conf").write_text("x")
    os.symlink("/etc/conf", root / "link")
    with pytest.raises(NotADirectoryError) as err:
        inroot.makedirs(root, "/link/sub")
    assert err.value.filename == "/etc/conf"
    assert (root / "etc/conf").read_text() == "x"


def test_makedirs_through_dangling_link_makes_its_target_inside(world) -> None:
    root, outside = world
    os.symlink(str(outside / "made"), root / "dangling")
    inroot.makedirs(root, "/dangling")
    assert not (outside / "made").exists()
    assert root.joinpath(str(outside).lstrip("/"), "made").is_dir()


# -- make_stub -----------------------------------------------------------------------------------

def test_make_stub_creates_parents_and_records_them(world) -> None:
    root, _ = world
    created: list[Path] = []
    with inroot.Root(root) as r:
        d = r.make_stub("/run/secrets/dir", directory=True, created=created)
        f = r.make_stub("/etc/hosts", directory=False, created=created)
    assert created == [root / "run", root / "run/secrets", root / "run/secrets/dir", root / "etc/hosts"]
    assert d.is_dir() and stat.S_IMODE(d.stat().st_mode) == 0o755
    assert f.is_file() and f.stat().st_size == 0 and stat.S_IMODE(f.stat().st_mode) == 0o644


def test_make_stub_keeps_what_exists(world) -> None:
    root, _ = world
    (root / "etc/hosts").write_text("127.0.0.1 here\n")
    created: list[Path] = []
    with inroot.Root(root) as r:
        assert r.make_stub("/etc/hosts", directory=False, created=created) == root / "etc/hosts"
        assert r.make_stub("/etc", directory=True, created=created) == root / "etc"
        with pytest.raises(inroot.StubError, match="not a directory"):
            r.make_stub("/etc/hosts", directory=True, created=created)
        with pytest.raises(inroot.StubError, match="not a file"):
            r.make_stub("/etc", directory=False, created=created)
        with pytest.raises(inroot.StubError, match="a parent is not a directory"):
            r.make_stub("/etc/hosts/x", directory=True, created=created)
    assert created == [] and (root / "etc/hosts").read_text() == "127.0.0.1 here\n"


@pytest.mark.parametrize("kind", ["abs", "dotdot", "rel"])
def test_make_stub_through_planted_links_stays_inside(world, kind: str) -> None:
    root, outside = world
    before = fingerprint(outside)
    os.symlink(_escapes(root, outside)[kind], root / "mnt")
    created: list[Path] = []
    with inroot.Root(root) as r:
        stub = r.make_stub("/mnt/newdir/point", directory=True, created=created)
        r.make_stub("/mnt/etc/passwd", directory=False, created=created)  # exists outside only
    assert fingerprint(outside) == before
    assert all(root in p.parents for p in created) and root in stub.parents


def test_make_stub_root_itself_and_parent_limit(world) -> None:
    root, _ = world
    os.symlink("/", root / "toroot")
    with inroot.Root(root) as r:
        with pytest.raises(inroot.StubError, match="root itself"):
            r.make_stub("/toroot", directory=True, created=[])
        with pytest.raises(inroot.StubError, match="parent directory is missing"):
            r.make_stub("/a/b/hosts", directory=False, created=[], max_new_parents=1)
    assert not (root / "a").exists()


# -- write_file and read_file --------------------------------------------------------------------

def test_write_file_replaces_a_planted_symlink(world) -> None:
    root, outside = world
    (root / ".run").mkdir()
    os.symlink(str(outside / "secret"), root / ".run/script")
    host = inroot.write_file(root, "/.run/script", b"#!/bin/sh\n", 0o755)
    assert (outside / "secret").read_text() == "host secret"
    assert host == root / ".run/script" and not host.is_symlink()
    assert host.read_bytes() == b"#!/bin/sh\n" and stat.S_IMODE(host.stat().st_mode) == 0o755


def test_write_file_through_symlinked_parent_stays_inside(world) -> None:
    root, outside = world
    os.symlink(str(outside), root / "dir")
    (root.joinpath(str(outside).lstrip("/"))).mkdir(parents=True)
    inroot.write_file(root, "/dir/secret", b"mine", 0o644)
    assert (outside / "secret").read_text() == "host secret"
    assert root.joinpath(str(outside).lstrip("/"), "secret").read_bytes() == b"mine"


@pytest.mark.parametrize("kind", ["abs", "dotdot", "rel"])
@pytest.mark.usefixtures("resolver")
def test_read_file_never_reads_the_hosts(world, kind: str) -> None:
    root, outside = world
    (root / "etc").rmdir()
    os.symlink(_escapes(root, outside)[kind] + "/etc", root / "etc")
    assert inroot.read_file(root, "/etc/passwd") is None
    inside = inroot.resolve(root, "/etc")
    inside.mkdir(parents=True)
    (inside / "passwd").write_text("img:x:1:1::/:/bin/sh\n")
    assert inroot.read_file(root, "/etc/passwd") == b"img:x:1:1::/:/bin/sh\n"


@pytest.mark.usefixtures("resolver")
def test_read_file_refuses_what_is_not_a_regular_file(world) -> None:
    root, _ = world
    os.mkfifo(root / "etc/passwd")
    with pytest.raises(LayerSecurityError, match="not a regular file"):
        inroot.read_file(root, "/etc/passwd")
    with pytest.raises(LayerSecurityError, match="not a regular file"):
        inroot.read_file(root, "/etc")
    (root / "big").write_bytes(b"x" * 100)
    with pytest.raises(LayerSecurityError, match="larger than"):
        inroot.read_file(root, "/big", limit=10)


# -- COPY through the API ------------------------------------------------------------------------

def _context(tmp_path: Path) -> SourceRoot:
    ctx = tmp_path / "ctx"
    (ctx / "dir").mkdir(parents=True)
    (ctx / "dir/file").write_text("data")
    return SourceRoot(root=str(ctx), is_context=True)


@pytest.mark.parametrize("kind", ["abs", "dotdot", "rel"])
def test_copy_into_planted_link_writes_inside(world, tmp_path: Path, kind: str) -> None:
    root, outside = world
    before = fingerprint(outside)
    os.symlink(_escapes(root, outside)[kind], root / "app")
    result = copy_files(_context(tmp_path), CopyRequest(sources=["dir"], dest="/app/etc/"), str(root))
    assert fingerprint(outside) == before
    assert inroot.read_file(root, "/app/etc/file") == b"data"
    assert result.touched


def test_copy_parents_are_root_owned_0755_unless_chown(world, tmp_path: Path) -> None:
    root, _ = world
    (root / "keep").mkdir()
    os.chmod(root / "keep", 0o700)
    os.chown(root / "keep", 7, 7)
    ctx = _context(tmp_path)
    old = os.umask(0o077)
    try:
        copy_files(ctx, CopyRequest(sources=["dir/file"], dest="/keep/a/b/"), str(root))
        copy_files(ctx, CopyRequest(sources=["dir/file"], dest="/keep/c/d/", owner=(42, 43)), str(root))
    finally:
        os.umask(old)
    kept = os.stat(root / "keep")
    assert (stat.S_IMODE(kept.st_mode), kept.st_uid) == (0o700, 7)
    for rel, owner in (("keep/a", 0), ("keep/a/b", 0), ("keep/c", 42), ("keep/c/d", 42)):
        st = os.stat(root / rel)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, owner), rel


# -- mountinfo -----------------------------------------------------------------------------------

def test_mountinfo_fields_and_escapes() -> None:
    text = ("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            "30 22 0:5 / /mnt/a\\040b\\011c\\134d rw - tmpfs tmpfs rw\n"
            "short line\n")
    assert parse_mountinfo(text) == ["/", "/mnt/a b\tc\\d"]




# -- the sandbox's mount points ------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root here")
def test_mount_below_a_cache_mount_holding_a_link_stays_in_the_root(tmp_path: Path) -> None:
    """A cache mount keeps what earlier steps left, links too; a second mount below it is made
    where the link leads inside the root, after the cache is mounted, never on the host."""
    from pybuildless.sandbox import ChrootSandbox, Mount
    from pybuildless.fs.users import ResolvedUser
    from tests.test_sandbox import ENV, make_busybox_root

    root = make_busybox_root(tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    before = fingerprint(outside)
    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(str(outside), cache / "sub")  # left by an earlier step that used the cache
    out = bytearray()
    with ChrootSandbox(root) as box:
        code = box.run(["/bin/sh", "-c", "echo in-tmpfs > /cache/sub/x/f && cat /cache/sub/x/f"], env=ENV,
                       cwd="/", user=ResolvedUser(0, 0), stdout=out.extend,
                       mounts=[Mount("/cache", cache), Mount("/cache/sub/x", kind="tmpfs")]).exit_code
    assert (code, out.decode()) == (0, "in-tmpfs\n")
    assert fingerprint(outside) == before  # no x made on the host, nothing written there


# -- a whole build against links a RUN planted ------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root here")
def test_build_writes_stay_in_the_root_despite_planted_links(tmp_path: Path, registry, busybox_image) -> None:
    """WORKDIR, COPY parents, a RUN mount point and a heredoc script all go through links an earlier
    RUN left pointing at a host directory (absolute, and a long ``..`` chain): the host directory
    is untouched and the image holds what was made, under the same path inside the root."""
    from tests.buildkit import executor, unpack, write_context

    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_text("host file")
    before = fingerprint(canary)
    up = "../" * 12
    dockerfile = f"""\
FROM {busybox_image}
RUN mkdir -p /.pybuildless-run && ln -s {canary}/script /.pybuildless-run/EOF \\
 && ln -s {canary} /wd && ln -s {up}{str(canary).lstrip('/')} /cp && ln -s {canary} /mnt
WORKDIR /wd/made
COPY f /cp/sub/
RUN --mount=type=tmpfs,target=/mnt/point true
RUN <<EOF
#!/bin/sh
echo script ran > /ran
EOF
"""
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "f": "copied"})
    ref = registry.ref("inroot/planted:1")
    executor("-c", str(ctx), "-d", ref, cwd=tmp_path)
    assert fingerprint(canary) == before
    assert not (canary / "script").exists() and not (canary / "made").exists()
    rootfs = unpack(f"docker://{ref}", tmp_path / "u").rootfs
    inside = rootfs / str(canary).lstrip("/")
    assert (inside / "made").is_dir()
    assert (inside / "sub/f").read_text() == "copied"
    assert (inside / "point").is_dir()  # a directory mount point stays, empty, as BuildKit leaves it
    assert (rootfs / "ran").read_text() == "script ran\n"
