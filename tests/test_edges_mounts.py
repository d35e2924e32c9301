"""The sandbox's mount plan at its edges (found by mutation testing of sandbox/mounts.py).

Only the parts the builder runs in its own process are here: what prepare_mounts makes and keeps,
the copies of the host's /etc/hosts and /etc/resolv.conf, and the undoing of what it created. The rule
they follow is Docker's: a container sees copies of these files, never the host's own (moby
daemon/container_operations_unix.go bind-mounts per-container copies), and a mount point the image
does not have is created for the step only.
"""

from __future__ import annotations

import logging
import os
import stat

import pytest

from pybuildless.sandbox.mounts import _DEFAULT_HOSTS, _host_copy, prepare_mounts, remove_created

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount points are made as root")


def test_a_host_file_that_cannot_be_read_gives_the_default_copy(tmp_path):
    copy = _host_copy(tmp_path, "hosts", str(tmp_path / "no-such-hosts"), _DEFAULT_HOSTS)
    assert copy == tmp_path / "hosts" and copy.read_bytes() == _DEFAULT_HOSTS
    assert stat.S_IMODE(os.lstat(copy).st_mode) == 0o644


def test_host_copies_are_bounded_to_one_mebibyte(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (3 << 20))
    copy = _host_copy(tmp_path, "resolv.conf", str(big), b"")
    assert copy.stat().st_size == 1 << 20


def test_mount_points_of_the_wrong_kind_are_skipped_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pybuildless.sandbox.mounts")
    root = tmp_path / "root"
    (root / "etc/hosts").mkdir(parents=True)  # a directory where a file is mounted
    os.mkfifo(root / "etc/resolv.conf")  # a non-directory, but no regular file to bind over
    (root / "proc").write_text("not a directory")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    plan = prepare_mounts(root, scratch)
    try:
        assert sorted(plan.targets) == ["dev", "sys"]
        assert "not mounting /etc/resolv.conf: it exists and is not a regular file" in caplog.messages
        assert "not mounting /etc/hosts: it exists and is not a file" in caplog.messages
        assert "not mounting /proc: it exists and is not a directory" in caplog.messages
    finally:
        plan.cleanup()
    assert sorted(os.listdir(root)) == ["etc", "proc"] and sorted(os.listdir(root / "etc")) == ["hosts", "resolv.conf"]


def test_a_created_directory_the_step_filled_is_kept_and_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pybuildless.sandbox.mounts")
    made = tmp_path / "etc"
    made.mkdir()
    (made / "written-by-run").write_text("x")
    created = [made]
    remove_created(created)
    assert made.is_dir() and created == []
    assert f"keeping {made}: Directory not empty" in caplog.messages
