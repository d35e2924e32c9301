"""WORKDIR, COPY and ADD steps on a temp root with a plain context directory.

Files are given to the ids running the test (``USER``/``--chown`` of ``stepkit.SELF``) so that
no step needs root. Expected values are BuildKit's rules at
moby/buildkit@73ed6825c4b7569379ef89df0aedcdbe64473d31: dockerfile2llb/convert.go
dispatchWorkdir (util/system/path.go NormalizeWorkdir: a clean path joined onto the current
WorkingDir; directories made 0755 for the USER), dispatchCopy (a directory source copies its
contents; a destination ending in ``/`` is a directory; a relative one joins WORKDIR; COPY
refuses URLs), and ADD of a local tar archive (unpacked into the destination).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from pybuildless.builder import imageconfig
from pybuildless.builder.commands.files import AddStep, CopyStep
from pybuildless.builder.stage import StageResult
from pybuildless.builder.commands.workdir import WorkdirStep
from pybuildless.errors import DockerfileError
from pybuildless.image.descriptor import Platform
from pybuildless.image.model import build_image
from tests.stepkit import SELF, expanded_step, stage

IDS = (os.geteuid(), os.getegid())


def _context(tmp_path) -> None:
    ctx = tmp_path / "context"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("A")
    os.chmod(ctx / "a.txt", 0o640)
    (ctx / "dir" / "b.txt").write_text("B")
    (ctx / "dir" / "sub" / "c.sh").write_text("#!/bin/sh\n")
    os.chmod(ctx / "dir" / "sub" / "c.sh", 0o755)


def _owner_mode(path) -> tuple[tuple[int, int], int]:
    st = os.lstat(path)
    return (st.st_uid, st.st_gid), stat.S_IMODE(st.st_mode)


# -- WORKDIR ------------------------------------------------------------------------------------

@pytest.mark.parametrize("current, value, want", [
    (None, "app", "/app"), ("/app", "lib", "/app/lib"), ("/app", "../srv/./x/", "/srv/x"), ("/app", "/", "/"),
])
def test_workdir_config_effect_joins_and_cleans(tmp_path, current, value, want) -> None:
    run = stage(tmp_path, f"FROM scratch\nWORKDIR {value}\n", run=False)
    config = {"config": {"WorkingDir": current} if current else {}}
    step = expanded_step(run, 0)
    assert isinstance(step, WorkdirStep) and step.touches_files
    assert step.config_effect(config)["config"]["WorkingDir"] == want
    assert config == {"config": {"WorkingDir": current} if current else {}}


def test_workdir_makes_the_missing_directories_for_the_user(tmp_path) -> None:
    run = stage(tmp_path, f"FROM scratch\nUSER {SELF}\nWORKDIR /app\nWORKDIR sub/../lib\nWORKDIR /app\n")
    root = run.ctx.root
    assert run.container["WorkingDir"] == "/app"
    first, second, again = run.outcomes[1:]
    assert (first.snapshot, first.paths) == (True, ("/app",))
    assert (second.snapshot, second.paths) == (True, ("/app/lib",))
    assert (again.snapshot, again.paths) == (False, None), "an existing directory is not touched"
    assert second.created_by == "WORKDIR /app/lib"
    assert _owner_mode(root / "app") == (IDS, 0o755)
    assert _owner_mode(root / "app" / "lib") == (IDS, 0o755)
    assert not (root / "app" / "sub").exists()


def test_workdir_cache_key_names_the_resolved_path_and_user(tmp_path) -> None:
    run = stage(tmp_path, f"FROM scratch\nWORKDIR /app\nUSER {SELF}\nWORKDIR ../srv\n", run=False)
    from tests.stepkit import execute, instructions

    steps = instructions(run)
    execute(run, steps[0])
    execute(run, steps[1])  # USER runs first: the key reads the user in effect
    step = expanded_step(run, 2)
    assert step.cache_key(run.ctx) == ["WORKDIR", "/srv", f"user={SELF}"]


# -- COPY ---------------------------------------------------------------------------------------

def test_copy_puts_files_and_directory_contents_into_the_destination(tmp_path) -> None:
    _context(tmp_path)
    run = stage(tmp_path, f"FROM scratch\nCOPY --chown={SELF} a.txt dir /dest/\n")
    root = run.ctx.root
    outcome = run.outcomes[0]
    assert (root / "dest" / "a.txt").read_text() == "A"
    assert (root / "dest" / "b.txt").read_text() == "B"  # dir's contents, not dir itself
    assert (root / "dest" / "sub" / "c.sh").exists() and not (root / "dest" / "dir").exists()
    assert _owner_mode(root / "dest" / "a.txt") == (IDS, 0o640)  # the mode is kept, --chown applies
    assert _owner_mode(root / "dest" / "sub" / "c.sh") == (IDS, 0o755)
    assert _owner_mode(root / "dest") == (IDS, 0o755)  # a missing destination: 0755, --chown's owner
    assert outcome.snapshot and outcome.created_by == "COPY a.txt dir /dest/ # buildkit"
    assert set(outcome.paths) == {"/dest", "/dest/a.txt", "/dest/b.txt", "/dest/sub", "/dest/sub/c.sh"}


def test_copy_to_a_relative_destination_joins_workdir_and_names_the_file(tmp_path) -> None:
    _context(tmp_path)
    run = stage(tmp_path, f"FROM scratch\nUSER {SELF}\nWORKDIR /w\nCOPY --chown={SELF} a.txt renamed\n")
    assert (run.ctx.root / "w" / "renamed").read_text() == "A"
    assert run.outcomes[-1].paths == ("/w/renamed",)


def test_copy_link_writes_a_tree_of_its_own(tmp_path) -> None:
    _context(tmp_path)
    run = stage(tmp_path, f"FROM scratch\nCOPY --link --chown={SELF} a.txt /x/\n")
    outcome = run.outcomes[0]
    assert outcome.layer_root is not None and outcome.created_by == "COPY --link a.txt /x/ # buildkit"
    assert open(os.path.join(outcome.layer_root, "x", "a.txt")).read() == "A"
    assert not (run.ctx.root / "x").exists(), "the stage applies the linked layer itself"


def test_copy_refuses_a_url(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nCOPY https://example.invalid/f /f\n", run=False)
    step = expanded_step(run, 0)
    assert isinstance(step, CopyStep)
    with pytest.raises(DockerfileError, match="source can't be a URL for COPY"):
        step.execute(run.ctx)


def test_copy_cache_key_follows_content_not_mtime(tmp_path) -> None:
    _context(tmp_path)
    run = stage(tmp_path, "FROM scratch\nCOPY a.txt dir /dest/\n", run=False)
    step = expanded_step(run, 0)
    key = step.cache_key(run.ctx)
    assert key[:2] == ["COPY", "dest=/dest/"] and "src=a.txt" in key and "src=dir" in key
    os.utime(tmp_path / "context" / "a.txt", (1, 1))
    assert step.cache_key(run.ctx) == key, "a new mtime alone keeps the key"
    (tmp_path / "context" / "dir" / "b.txt").write_text("changed")
    assert step.cache_key(run.ctx) != key, "new content makes a new key"
    assert step.config_effect(run.config) is run.config


def _built_stage(tmp_path, key: str | None) -> dict:
    """The result of an earlier stage named ``src`` whose root holds /data/f."""
    root = tmp_path / "src-root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "f").write_text("from a stage")
    config = imageconfig.scratch_config(Platform())
    return {0: StageResult(0, "src", build_image(config, []), root, config, key=key)}


FROM_STAGE = f"FROM scratch AS src\nFROM scratch\nCOPY --from=src --chown={SELF} /data /in/\n"


def test_copy_from_an_earlier_stage_reads_its_root(tmp_path) -> None:
    run = stage(tmp_path, FROM_STAGE, index=1, results=_built_stage(tmp_path, "k0"))
    assert (run.ctx.root / "in" / "f").read_text() == "from a stage"
    assert run.outcomes[0].created_by == "COPY --from=src /data /in/ # buildkit"


def test_copy_from_a_stage_is_keyed_on_that_stage_key(tmp_path) -> None:
    run = stage(tmp_path, FROM_STAGE, index=1, results=_built_stage(tmp_path, "k0"), run=False)
    assert expanded_step(run, 0).cache_key(run.ctx)[-1] == "from=k0"
    uncached = stage(tmp_path / "u", FROM_STAGE, index=1, results=_built_stage(tmp_path / "u", None), run=False)
    assert expanded_step(uncached, 0).cache_key(uncached.ctx) is None, "a stage that was not cached"


def test_copy_from_a_stage_not_built_names_it(tmp_path) -> None:
    run = stage(tmp_path, FROM_STAGE, index=1, run=False)
    with pytest.raises(DockerfileError, match="--from=src: stage 0 has not been built"):
        expanded_step(run, 0).execute(run.ctx)


# -- ADD ----------------------------------------------------------------------------------------

def test_add_unpacks_a_local_tar_archive(tmp_path) -> None:
    (tmp_path / "context").mkdir(parents=True)
    with tarfile.open(tmp_path / "context" / "pkg.tar.gz", "w:gz") as tar:
        data = b"inside\n"
        info = tarfile.TarInfo("pkg/x.txt")
        info.size, info.mode, info.uid, info.gid = len(data), 0o604, *IDS
        tar.addfile(info, io.BytesIO(data))
    run = stage(tmp_path, f"FROM scratch\nADD --chown={SELF} pkg.tar.gz /opt/\n")
    assert (run.ctx.root / "opt" / "pkg" / "x.txt").read_text() == "inside\n"
    assert _owner_mode(run.ctx.root / "opt" / "pkg" / "x.txt") == (IDS, 0o604)
    assert run.outcomes[0].created_by == "ADD pkg.tar.gz /opt/ # buildkit"


def test_add_of_a_url_is_cached_only_with_a_checksum(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nADD https://example.invalid/f.tgz /f\n"
                          "ADD --checksum=sha256:" + "0" * 64 + " https://example.invalid/f.tgz /f\n", run=False)
    plain, pinned = expanded_step(run, 0), expanded_step(run, 1)
    assert isinstance(plain, AddStep)
    assert plain.cache_key(run.ctx) is None, "remote content may change under the same URL"
    assert f"checksum=sha256:{'0' * 64}" in pinned.cache_key(run.ctx)
