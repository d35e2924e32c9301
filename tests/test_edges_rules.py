"""Rules at their edges: each test fails on one small, plausible mistake in the module it names.

The expected values come from the rule's source (cited per test), never from the code under test.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from pybuildless.builder.copy import CopyRequest, SourceRoot, copy_files, source_digest
from pybuildless.dockerfile.args import GlobalArgs, StageEnv, platform_args
from pybuildless.dockerfile.parser import parse_dockerfile
from pybuildless.dockerfile.pathmatch import match as go_match
from pybuildless.fs import owners
from pybuildless.fs.extract import extract_layer
from pybuildless.registry.credentials import default_keychain
from tests.fs_hostile import entry, tar_bytes


def apply(root: Path, *entries) -> None:
    extract_layer(io.BytesIO(tar_bytes(list(entries))), root)


# -- whiteouts -------------------------------------------------------------------------------------


def test_whiteout_never_hides_an_entry_of_its_own_layer(tmp_path):
    """OCI image-spec layer.md, "Whiteouts": "Whiteout files MUST only apply to resources in
    lower/parent layers. Files that are present in the same layer as a whiteout file can only be
    hidden by whiteout files in subsequent layers." """
    apply(tmp_path, entry("a/old", "file", b"lower"), entry("a/dir/f", "file", b"lower"))
    apply(tmp_path,
          entry("a/new", "file", b"same layer"), entry("a/.wh.new", "file"),
          entry("a/newdir/g", "file", b"same layer"), entry("a/.wh.newdir", "file"),
          entry("a/.wh.old", "file"), entry("a/.wh.dir", "file"))
    assert sorted(os.listdir(tmp_path / "a")) == ["new", "newdir"]
    assert (tmp_path / "a/new").read_bytes() == b"same layer"
    assert (tmp_path / "a/newdir/g").read_bytes() == b"same layer"
    # the next layer can hide them
    apply(tmp_path, entry("a/.wh.new", "file"), entry("a/.wh.newdir", "file"))
    assert os.listdir(tmp_path / "a") == []


# -- global ARGs -----------------------------------------------------------------------------------


def test_redeclared_platform_arg_before_from_keeps_its_value():
    """Dockerfile reference, "Automatic platform ARGs in the global scope": TARGETARCH etc. are
    predefined in the global scope; ``ARG TARGETARCH`` without a value declares it, it does not
    clear it (BuildKit dockerfile2llb/convert.go only replaces a meta ARG that has a value or a
    --build-arg). The usual pattern: ``ARG TARGETARCH`` / ``FROM img-$TARGETARCH``."""
    df = parse_dockerfile("ARG TARGETARCH\nARG TARGETOS TARGETVARIANT\nFROM base-$TARGETOS-$TARGETARCH$TARGETVARIANT\n"
                          "ARG TARGETARCH\nLABEL arch=$TARGETARCH\n")
    glob = GlobalArgs.resolve(df.meta_args, {}, platform_args("linux/arm64/v8", "linux/amd64"))
    assert df.stages[0].from_.expand(glob.env).image == "base-linux-arm64v8"
    scope = StageEnv(glob, {})
    applied = [scope.apply(i) for i in df.stages[0].instructions]
    assert applied[-1].pairs == (("arch", "arm64"),)
    # a --build-arg still wins over the automatic value
    glob = GlobalArgs.resolve(df.meta_args, {"TARGETARCH": "riscv64"}, platform_args("linux/arm64/v8"))
    assert glob.env["TARGETARCH"] == "riscv64"


def test_redeclared_global_arg_without_default_keeps_the_earlier_value():
    """Same rule for user ARGs: ``ARG V=1`` then ``ARG V`` (both before FROM) leaves V=1."""
    df = parse_dockerfile("ARG V=1\nARG V\nFROM base-$V\n")
    glob = GlobalArgs.resolve(df.meta_args, {}, platform_args("linux/amd64"))
    assert df.stages[0].from_.expand(glob.env).image == "base-1"


# -- COPY destinations and owners --------------------------------------------------------------------


def _context(tmp_path: Path, files: dict[str, bytes]) -> SourceRoot:
    ctx = tmp_path / "ctx"
    for name, data in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_bytes(data)
    return SourceRoot(str(ctx), is_context=True)


def test_single_wildcard_match_onto_a_name_without_slash_is_a_file(tmp_path):
    """Dockerfile reference (COPY): "If <dest> doesn't end with a slash, it will be considered a
    regular file and the contents of <src> will be written at <dest>". A wildcard that matches one
    file is that one source (BuildKit resolves the pattern, then copies each match to dest, which
    only a trailing slash or an existing directory makes a directory)."""
    src = _context(tmp_path, {"app.conf": b"conf", "other.txt": b"x"})
    dest = tmp_path / "root"
    dest.mkdir()
    copy_files(src, CopyRequest(sources=["*.conf"], dest="/etc/app", match=go_match), str(dest))
    assert (dest / "etc/app").is_file() and (dest / "etc/app").read_bytes() == b"conf"
    # with a trailing slash the same single match goes into the directory
    copy_files(src, CopyRequest(sources=["*.conf"], dest="/etc/dir/", match=go_match), str(dest))
    assert (dest / "etc/dir/app.conf").read_bytes() == b"conf"


def _owner(path: Path) -> tuple[int, int]:
    """The owner the image will record: the real one, or the one recorded when not root."""
    st = os.lstat(path)
    return owners.recorded_owner(str(path)) or (st.st_uid, st.st_gid)


def test_context_files_become_root_owned_whoever_owns_them(tmp_path):
    """moby #37123 / PR #38599 (and BuildKit): files from the build context are copied as 0:0
    unless --chown says otherwise; the builder's own uid must not leak into the image."""
    src = _context(tmp_path, {"d/f": b"data"})
    if os.geteuid() == 0:  # as root, give them an owner that is not ours
        for p in (Path(src.root) / "d", Path(src.root) / "d/f"):
            os.chown(p, 4321, 8765)
    assert _owner(Path(src.root) / "d/f") != (0, 0)
    dest = tmp_path / "root"
    dest.mkdir()
    copy_files(src, CopyRequest(sources=["d"], dest="/out/"), str(dest))
    copy_files(src, CopyRequest(sources=["d/f"], dest="/single"), str(dest))
    assert _owner(dest / "out/f") == (0, 0) and _owner(dest / "single") == (0, 0)
    copy_files(src, CopyRequest(sources=["d/f"], dest="/chowned", owner=(7, 9)), str(dest))
    assert _owner(dest / "chowned") == (7, 9)


def test_context_digest_covers_mode_and_content_not_mtime(tmp_path):
    """The COPY cache key must change when what lands in the image changes: content and mode
    (BuildKit's content hash covers the mode: fsutil's Stat carries it), not mtime."""
    src = _context(tmp_path, {"run.sh": b"#!/bin/sh\n"})
    path = Path(src.root) / "run.sh"
    req = CopyRequest(sources=["run.sh"], dest="/run.sh")
    os.chmod(path, 0o644)
    before = source_digest(src, req)
    os.utime(path, (1, 1))
    assert source_digest(src, req) == before
    os.chmod(path, 0o755)
    assert source_digest(src, req) != before
    os.chmod(path, 0o644)
    assert source_digest(src, req) == before
    path.write_bytes(b"#!/bin/sh\n\n")
    assert source_digest(src, req) != before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


# -- credentials -------------------------------------------------------------------------------------


def _helper(bindir: Path, name: str, username: str) -> None:
    script = bindir / f"docker-credential-{name}"
    script.write_text("#!/usr/bin/env python3\nimport json, sys\nurl = sys.stdin.read().strip()\n"
                      f"json.dump({{'ServerURL': url, 'Username': {username!r}, 'Secret': 'secret-' + url}}, sys.stdout)\n")
    script.chmod(0o755)


def test_cred_helper_for_the_host_beats_the_creds_store(tmp_path, monkeypatch):
    """docker/cli cli/config/configfile/file.go, GetCredentialsStore: ``credHelpers[host]`` is
    consulted first; ``credsStore`` only for hosts without their own helper."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _helper(bindir, "pbstore", "from-store")
    _helper(bindir, "pbhelper", "from-host-helper")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    conf = tmp_path / "docker"
    conf.mkdir()
    (conf / "config.json").write_text(json.dumps({
        "credsStore": "pbstore",
        "credHelpers": {"helped.example": "pbhelper"},
        "auths": {"helped.example": {"auth": "ZmlsZTpmaWxl"}},
    }))
    kc = default_keychain({"DOCKER_CONFIG": str(conf), "HOME": str(tmp_path)})
    assert kc.resolve("helped.example").username == "from-host-helper"
    assert kc.resolve("other.example").username == "from-store"


@pytest.mark.parametrize("key", ["helped.example", "https://helped.example", "helped.example/v2/"])
def test_cred_helper_key_forms_still_beat_the_store(tmp_path, monkeypatch, key):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _helper(bindir, "pbstore", "from-store")
    _helper(bindir, "pbhelper", "from-host-helper")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    conf = tmp_path / "docker"
    conf.mkdir()
    (conf / "config.json").write_text(json.dumps({"credsStore": "pbstore", "credHelpers": {key: "pbhelper"}}))
    kc = default_keychain({"DOCKER_CONFIG": str(conf), "HOME": str(tmp_path)})
    assert kc.resolve("helped.example").username == "from-host-helper"
