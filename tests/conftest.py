"""Shared pytest configuration. Fixtures live in plugin modules, one per area."""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.images",
    "tests.fixtures.dockerd",
]

import os
from pathlib import Path

import pytest

# Client state that tools write by default and that no test may touch: a login or a BuildKit
# node id there means some test ran a client without pointing it at its temp dir.
_USER_STATE = (Path.home() / ".docker", Path.home() / ".config" / "containers", Path.home() / ".gitconfig")


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
