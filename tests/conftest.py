"""Shared pytest configuration. Fixtures live in plugin modules, one per area."""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.images",
    "tests.fixtures.dockerd",
    "tests.fixtures.differential",
    "tests.fixtures.executor_prefetch",
]

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Client state that tools write by default and that no test may touch: a login or a BuildKit
# node id there means some test ran a client without pointing it at its temp dir. Builds keep
# their layer store and RUN cache mounts in $XDG_CACHE_HOME/pybuildless (~/.cache/pybuildless).
_USER_STATE = (Path.home() / ".docker", Path.home() / ".config" / "containers", Path.home() / ".gitconfig",
               Path.home() / ".cache" / "pybuildless")
_XDG_CACHE: dict[str, str] = {}


def pytest_configure(config) -> None:
    """Every build of the session (in process or a child, which inherits the environment) keeps
    its layer store in one temp dir: shared, as on a real machine, and never the user's."""
    if "dir" not in _XDG_CACHE:
        _XDG_CACHE["previous"] = os.environ.get("XDG_CACHE_HOME")
        _XDG_CACHE["dir"] = tempfile.mkdtemp(prefix="pybuildless-test-xdg-cache-")
        os.environ["XDG_CACHE_HOME"] = _XDG_CACHE["dir"]


def pytest_unconfigure(config) -> None:
    path = _XDG_CACHE.pop("dir", None)
    if path is None:
        return
    previous = _XDG_CACHE.pop("previous", None)
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
    shutil.rmtree(path, ignore_errors=True)


def _snapshot(paths) -> dict:
    state = {}
    for top in paths:
        for dirpath, _, files in os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]:
            for name in files:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                state[str(path)] = (st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture(scope="session", autouse=True)
def home_untouched():
    """Fails the session if a test wrote client state into the invoking user's home."""
    before = _snapshot(_USER_STATE)
    yield
    after = _snapshot(_USER_STATE)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"tests wrote outside their temp dirs: {sorted({p for p, _ in changed})}"


def _host_superblock_options() -> dict[str, str]:
    """Superblock options of the kernel filesystems every container shares with this host: a
    read-only or remounted /sys or /proc superblock here changes them for the whole machine."""
    found = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in ("/sys", "/proc") and " - " in line:
            found[fields[4]] = line.split(" - ", 1)[1].split()[-1]
    return found


@pytest.fixture(autouse=True)
def host_kernel_mounts_untouched():
    """Fails the test after which the host's /sys or /proc superblock options changed (a remount
    without MS_BIND, or a fresh mount of a superblock shared with the host, changes them for all)."""
    before = _host_superblock_options()
    yield
    after = _host_superblock_options()
    assert after == before, f"the host's kernel filesystems changed: {before} -> {after}"
