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


# -- random layers built from the dangerous ingredients -------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fs_hostile import entry, tar_bytes  # noqa: E402

_NAMES = ["a", "b", "a/b", "b/a", "a/b/c", "passwd", "sub", "sub/file", ".", "a/.", "b/.."]


def _random_entry(draw_kind, name, target):
    kind = draw_kind
    if kind == "file":
        return entry(name, "file", b"pwned", mode=0o4777)
    if kind in ("dir", "fifo"):
        return entry(name, kind, mode=0o777)
    if kind == "whiteout":
        parent, _, base = name.rpartition("/")
        return entry(f"{parent}/.wh.{base}" if parent else f".wh.{base}", "file")
    if kind == "opaque":
        return entry(f"{name}/.wh..wh..opq", "file")
    return entry(name, kind, link=target)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_hostile_layers_never_touch_the_outside(tmp_path_factory, resolver, data):
    base = tmp_path_factory.mktemp("fuzz")
    canary = _make_canary(base)
    root = base / "root"
    root.mkdir()
    targets = [str(canary), str(canary / "passwd"), "../" * 8 + str(canary).lstrip("/"), "/", "..", "a", "/a/b",
               "passwd", "sub/file", "../../../.."]
    layer_spec = st.lists(st.tuples(
        st.sampled_from(["file", "dir", "symlink", "hardlink", "whiteout", "opaque", "fifo"]),
        st.sampled_from(_NAMES), st.sampled_from(targets)), min_size=1, max_size=8)
    layers = data.draw(st.lists(layer_spec, min_size=1, max_size=3))
    before = fingerprint(canary)
    outside_before = sorted(os.listdir(base))
    for spec in layers:
        try:
            extract_layer(io.BytesIO(tar_bytes([_random_entry(k, n, t) for k, n, t in spec])), root)
        except PybuildlessError:
            pass
    assert fingerprint(canary) == before
    assert sorted(os.listdir(base)) == outside_before
    assert root.is_dir() and not root.is_symlink()
