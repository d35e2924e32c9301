"""buildah as a second opinion: every case under ``tests/differential/`` that buildah 1.28 can build is
built by pybuildless and by buildah (``bud --isolation chroot --layers``), both pushed to the session
registry, unpacked with skopeo + umoci and compared by ``tests.differential.compare``, like the
BuildKit reference (``tests/test_differential_buildkit.py``). Where buildah departs from BuildKit and
pybuildless follows BuildKit, the difference is allowed in ``compare.ALLOWED``, with its reason.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.differential import cases
from tests.differential.compare import (BUILDAH, BUILDKIT, EMPTY_SHA256, config_differences, tree_differences,
                                        verdict)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)"),
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed"),
]

# Cases buildah 1.28 cannot build, or builds unlike BuildKit, say so in their header (``# buildah: ...``).
CASES = [c for c in cases() if not c.buildah_note]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_image_as_buildah(case, differential_builds):
    ours = differential_builds.result("pybuildless", case)
    theirs = differential_builds.result(BUILDAH, case)
    failures = verdict(case, ours, theirs, BUILDAH)
    assert not failures, "\n".join(failures)


def test_comparison_reports_real_differences():
    """The comparison itself must catch what it claims to: a mode, an owner, a missing file, content,
    an xattr; and allow only the listed leftovers, only in their listed shape."""
    base = {"/a": ("f", 0o644, 0, 0, "x" * 64, ()), "/d": ("d", 0o755, 0, 0, "", ())}
    assert tree_differences(base, dict(base), BUILDAH) == {}
    leftovers = {"/etc/hosts": ("f", 0o644, 0, 0, EMPTY_SHA256, ()), "/proc": ("d", 0o755, 0, 0, "", ())}
    assert tree_differences(base, {**base, **leftovers}, BUILDAH) == {}
    assert tree_differences(base, {**base, "/proc": leftovers["/proc"]}, BUILDKIT) == {}
    assert list(tree_differences(base, {**base, "/etc/hosts": leftovers["/etc/hosts"]}, BUILDKIT)) == ["/etc/hosts"]
    changed = {"/a": ("f", 0o600, 0, 0, "x" * 64, ()), "/d": ("d", 0o755, 1, 1, "", ()),
               "/etc/hosts": ("f", 0o644, 0, 0, "y" * 64, ()), "/proc": ("d", 0o755, 0, 0, "", ()),
               "/proc/x": ("f", 0o644, 0, 0, EMPTY_SHA256, ())}
    found = tree_differences(base, changed, BUILDAH)
    assert list(found) == ["/a", "/d", "/etc/hosts", "/proc", "/proc/x"]
    assert "0644" in found["/a"] and "0600" in found["/a"] and "1:1" in found["/d"]
    xattr = {"/a": ("f", 0o644, 0, 0, "x" * 64, (("user.k", "76"),)), "/d": base["/d"]}
    assert list(tree_differences(base, xattr, BUILDKIT)) == ["/a"]
    assert config_differences({"config": {}}, {"config": {"Labels": {"io.buildah.version": "1"}, "Env": []}},
                              BUILDAH) == {}
    assert list(config_differences({"config": {}}, {"config": {"Labels": {"io.buildah.version": "1"}}},
                                   BUILDKIT)) == ["config Labels"]
    assert config_differences({"config": {"Env": ["A=1", "B=2"]}}, {"config": {"Env": ["B=2", "A=1"]}}, BUILDAH) == {}
    assert list(config_differences({"config": {"Env": ["A=1", "B=2"]}}, {"config": {"Env": ["B=2", "A=1"]}},
                                   BUILDKIT)) == ["config Env"]
    assert list(config_differences({"config": {"Cmd": ["a"]}}, {"config": {"Cmd": ["b"]}}, BUILDKIT)) == ["config Cmd"]
    assert list(config_differences({"config": {"OnBuild": ["RUN x"]}}, {"config": {}}, BUILDKIT)) == ["config OnBuild"]
