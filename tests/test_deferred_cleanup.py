"""A build's work dir is removed after the build exits, by a detached process, when it is big and nothing
asks to wait; trash left by a remover that died is swept by the next build or `pybuildless prune`, and the
trash of a live owner is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pybuildless.fs import trash
from tests.buildkit import ROOT, write_context

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")

# more entries than a build removes before it exits (trash.SYNC_ENTRY_LIMIT)
BIG = "FROM {base}\nRUN mkdir /many && cd /many && for i in $(seq 1 1500); do echo $i > f$i; done\n"
SMALL = "FROM {base}\nRUN echo hi > /hi\n"


def wait_until_empty(directory: Path, timeout: float = 120.0) -> float:
    """Seconds until ``directory`` holds nothing; fails after ``timeout``."""
    started = time.monotonic()
    while os.listdir(directory):
        if time.monotonic() - started > timeout:
            pytest.fail(f"{directory} still holds {sorted(os.listdir(directory))} after {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - started


def run_build(tmp_path: Path, registry, base: str, dockerfile: str, name: str, *flags: str,
              env: dict | None = None, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": dockerfile.format(base=base)})
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    args = ["--context", str(ctx), "-d", registry.ref(f"cleanup/{name}:1"), "--work-dir", str(tmp_path / "work"),
            "--digest-file", str(tmp_path / f"digest-{name}"), *flags]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir),
                "XDG_CACHE_HOME": str(tmp_path / "xdg"), **(env or {})}
    if "PYBUILDLESS_CLEANUP" not in (env or {}):
        full_env.pop("PYBUILDLESS_CLEANUP", None)  # the default rule, whatever the outer environment says
    proc = subprocess.run([*(prefix or []), sys.executable, "-c",
                           "from pybuildless.cli import executor_main; executor_main()", *args],
                          cwd=tmp_path, env=full_env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def dead_owner_trash(parent: Path) -> Path:
    """A trash dir named for a process that has exited (its pid and start time, as a build names it)."""
    child = subprocess.Popen(["sleep", "30"])
    name = trash.trash_name(child.pid)
    child.kill()
    child.wait()
    path = parent / name
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "f").write_text("x")
    return path


def live_owner_trash(parent: Path) -> Path:
    path = parent / trash.trash_name()  # this test process: alive throughout
    (path / "d").mkdir(parents=True)
    return path


# -- the rules, on real directories and processes ---------------------------------------------------------


def test_owner_is_alive_only_with_the_same_pid_and_start_time(tmp_path):
    assert trash.owner_alive(trash.trash_name())
    stale = dead_owner_trash(tmp_path)
    assert not trash.owner_alive(stale.name)
    reused = f"{trash.PREFIX}{os.getpid()}-1-abcd"  # this pid, another start: a reused pid
    assert not trash.owner_alive(reused)
    assert trash.owner_alive(".pybuildless-trash-odd")  # a name not ours to judge is never touched


def test_prune_sweeps_dead_owners_trash_and_leaves_live_ones(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    stale, live = dead_owner_trash(work), live_owner_trash(work)
    other = work / "pybuildless-abc"  # a running build's work dir: not trash
    other.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pybuildless", "prune", "--work-dir", str(work),
                           "--cache-dir", str(tmp_path / "store")], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 scratch tree(s)" in proc.stdout
    assert sorted(os.listdir(work)) == sorted([live.name, other.name])
    assert not stale.exists()


def test_discard_moves_into_the_work_dirs_trash_and_removes_elsewhere(tmp_path):
    work = tmp_path / "work"
    (work / "stages" / "0" / "upper" / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    trash.register(work)
    try:
        trash.discard(work / "stages" / "0" / "upper")
        trash.discard(outside)
    finally:
        trash.unregister(work)
    assert not (work / "stages" / "0" / "upper").exists() and not outside.exists()
    moved = list((work / trash.BIN_NAME).iterdir())
    assert len(moved) == 1 and (moved[0] / "a").is_dir()


def test_dispose_hands_a_big_work_dir_to_a_detached_remover(tmp_path):
    parent = tmp_path / "p"
    work = parent / "pybuildless-x"
    for i in range(trash.SYNC_ENTRY_LIMIT + 200):
        d = work / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"")
    stale, live = dead_owner_trash(parent), live_owner_trash(parent)
    trash.dispose(work, wait=False)
    assert not work.exists()  # renamed aside at once
    aside = [n for n in os.listdir(parent) if n.startswith(trash.PREFIX) and n != live.name]
    # each renamed to the remover's own name, a live owner until it is done
    assert all(trash.owner_alive(n) for n in aside), aside
    started = time.monotonic()
    while set(os.listdir(parent)) != {live.name}:
        assert time.monotonic() - started < 120, os.listdir(parent)
        time.sleep(0.1)
    assert not stale.exists() and (live / "d").is_dir()


def test_dispose_with_wait_removes_before_returning(tmp_path):
    work = tmp_path / "pybuildless-y"
    for i in range(trash.SYNC_ENTRY_LIMIT + 10):
        (work / f"f{i}").parent.mkdir(exist_ok=True)
        (work / f"f{i}").write_bytes(b"")
    stale = dead_owner_trash(tmp_path)
    trash.dispose(work, wait=True)
    assert not work.exists() and not stale.exists()


# -- whole builds ----------------------------------------------------------------------------------------------


def test_big_build_exits_before_its_work_dir_is_removed_and_it_goes_soon_after(tmp_path, registry, busybox_image):
    # --no-layer-store: the stage root is an extracted copy of the base, so the work dir is big
    proc = run_build(tmp_path, registry, busybox_image, BIG, "big", "--no-layer-store", "-v", "debug")
    assert b"is removed in the background" in proc.stderr
    assert not [n for n in os.listdir(tmp_path / "work") if n.startswith("pybuildless-")], \
        "the work dir keeps its name after the build"
    wait_until_empty(tmp_path / "work")
    assert os.listdir(tmp_path / "tmp") == []  # nothing written outside the work dir
    assert sorted(os.listdir(tmp_path)) == sorted(["ctx-big", "digest-big", "tmp", "work"] +
                                                  (["xdg"] if (tmp_path / "xdg").exists() else []))


def test_next_build_sweeps_trash_of_a_dead_remover_and_leaves_a_live_ones(tmp_path, registry, busybox_image):
    (tmp_path / "work").mkdir()
    stale, live = dead_owner_trash(tmp_path / "work"), live_owner_trash(tmp_path / "work")
    run_build(tmp_path, registry, busybox_image, SMALL, "small")
    # the sweep may hand the stale trash to a remover of its own (renamed, removed in the
    # background): wait until only the live owner's trash is left
    started = time.monotonic()
    while stale.exists() or os.listdir(tmp_path / "work") != [live.name]:
        assert time.monotonic() - started < 120, f"left: {os.listdir(tmp_path / 'work')}"
        time.sleep(0.1)
    assert (live / "d").is_dir()


def test_small_build_leaves_nothing_when_it_exits(tmp_path, registry, busybox_image):
    proc = run_build(tmp_path, registry, busybox_image, SMALL, "small", "-v", "debug")
    assert os.listdir(tmp_path / "work") == []
    assert b"removed in the background" not in proc.stderr


def test_pid_1_removes_before_it_exits(tmp_path, registry, busybox_image):
    # as a container's entrypoint: a remover left behind would die with the PID namespace
    proc = run_build(tmp_path, registry, busybox_image, BIG, "pid1", "--no-layer-store", "-v", "debug",
                     prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    assert os.listdir(tmp_path / "work") == []
    assert b"removed in the background" not in proc.stderr


def test_caller_may_ask_to_wait(tmp_path, registry, busybox_image):
    proc = run_build(tmp_path, registry, busybox_image, BIG, "wait", "--no-layer-store", "-v", "debug",
                     env={"PYBUILDLESS_CLEANUP": "wait"})
    assert os.listdir(tmp_path / "work") == []
    assert b"removed in the background" not in proc.stderr
