"""Hostile layers: nothing outside the root may change, whatever the layer says."""

from __future__ import annotations

import io
import os

import pytest

from pybuildless.errors import PybuildlessError
from pybuildless.fs import secure
from pybuildless.fs.extract import extract_layer
from tests.fs_hostile import fingerprint, hostile_corpus


@pytest.fixture(params=["openat2", "walk"])
def resolver(request):
    if request.param == "walk":
        secure.disable_openat2()
    yield request.param
    secure.enable_openat2()


def _make_canary(tmp_path):
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (canary / "sub" / "file").write_text("keep me")
    os.chmod(canary / "passwd", 0o644)
    return canary


CASES = [c.name for c in hostile_corpus(__import__("pathlib").Path("/canary"))]


def test_corpus_is_large_enough():
    assert len(CASES) >= 15
    assert len(set(CASES)) == len(CASES)


@pytest.mark.parametrize("case_name", CASES)
def test_hostile_layer_is_contained(tmp_path, resolver, case_name):
    canary = _make_canary(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    case = next(c for c in hostile_corpus(canary) if c.name == case_name)
    before = fingerprint(canary)
    outside_before = sorted(os.listdir(tmp_path))
    canary_mode = os.stat(canary).st_mode
    error = None
    try:
        for layer in case.layers:
            extract_layer(io.BytesIO(layer), root)
    except PybuildlessError as e:
        error = e
    assert fingerprint(canary) == before, "the canary outside the root changed"
    assert sorted(os.listdir(tmp_path)) == outside_before, "something was created next to the root"
    assert os.stat(canary).st_mode == canary_mode
    assert root.is_dir() and not root.is_symlink()
    if case.error is None:
        assert error is None, f"legitimate-but-odd layer rejected: {error}"
        if case.check is not None:
            case.check(root)
    else:
        assert error is not None and type(error).__name__ == case.error, f"expected {case.error}, got {error!r}"
    # nothing inside the root may be a hardlink to a file outside it
    canary_inodes = {os.lstat(os.path.join(d, f)).st_ino for d, _, fs in os.walk(canary) for f in fs}
    for d, _, fs in os.walk(root):
        for f in fs:
            assert os.lstat(os.path.join(d, f)).st_ino not in canary_inodes
