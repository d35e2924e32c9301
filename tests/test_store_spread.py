"""The store's temp area carries the top-of-hierarchy attribute where the file system has it,
read back with e2fsprogs' lsattr (an independent reader of FS_IOC_GETFLAGS)."""

from __future__ import annotations

import subprocess
import tempfile

from pybuildless.store.layers import LayerStore
from pybuildless.store.spread import mark_top_dir


def _lsattr_flags(path) -> str | None:
    """lsattr's flag letters for directory ``path``; None where the file system has no such flags."""
    done = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return done.stdout.split()[0]


def _supports_top_dir(tmp_path) -> bool:
    """Whether chattr(1) can set +T on a directory next to the store."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["chattr", "+T", str(probe)], capture_output=True).returncode != 0:
        return False
    return "T" in (_lsattr_flags(probe) or "")


def test_store_temp_area_is_a_top_dir_where_supported(tmp_path):
    supported = _supports_top_dir(tmp_path)
    store = LayerStore(tmp_path / "store")
    store._prepare()
    assert ("T" in (_lsattr_flags(store.tmp_dir) or "")) is supported
    assert mark_top_dir(store.tmp_dir) is supported  # already marked: nothing to change
    assert ("T" in (_lsattr_flags(store.entries_dir) or "")) is False  # entries keep the default placement
    assert not any(store.tmp_dir.iterdir())


def test_mark_top_dir_on_file_systems_without_the_attribute():
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:  # tmpfs: no FS_IOC_SETFLAGS
        assert mark_top_dir(d) is False
        assert _lsattr_flags(d) is None or "T" not in _lsattr_flags(d)


def test_mark_top_dir_on_a_missing_path_or_a_file(tmp_path):
    assert mark_top_dir(tmp_path / "missing") is False
    (tmp_path / "file").write_bytes(b"x")
    assert mark_top_dir(tmp_path / "file") is False
    supported = _supports_top_dir(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    assert "T" not in (_lsattr_flags(sub) or "")
    assert mark_top_dir(sub) is supported
    assert ("T" in (_lsattr_flags(sub) or "")) is supported
