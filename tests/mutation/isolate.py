"""pytest plugin for mutation runs (``-p tests.mutation.isolate``): each test runs in a temp
directory of its own. A mutant that drops a ``dir_fd`` works on "." instead of the directory it
was given; it then hits that scratch directory, not mutmut's copy of the project."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _scratch_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
