from __future__ import annotations

import pytest

from pybuildless.errors import UsageError
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.mountinfo import parse_mountinfo

MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
24 22 0:5 / /dev rw shared:3 - devtmpfs udev rw
30 22 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
31 22 0:41 / /mnt/tab\\011and\\134backslash rw - tmpfs tmpfs rw
32 22 0:42 /secret /var/run/secrets/kubernetes.io/serviceaccount ro - tmpfs tmpfs ro
"""


def test_mountinfo_parsing_decodes_octal_escapes():
    points = parse_mountinfo(MOUNTINFO)
    assert points == ["/", "/proc", "/dev", "/mnt/with space", "/mnt/tab\tand\\backslash",
                      "/var/run/secrets/kubernetes.io/serviceaccount"]


def test_in_place_list_has_defaults_mounts_and_extras(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    ig = IgnoreList.for_in_place("/kaniko", extra=["/cache/"], mountinfo=mi, resolve_symlinks=False)
    for p in ["/kaniko", "/kaniko/executor", "/proc/1/root", "/sys", "/dev/null", "/var/run/docker.sock",
              "/mnt/with space/x", "/cache", "/cache/a"]:
        assert ig.is_ignored(p), p
    for p in ["/", "/etc/passwd", "/kanikox", "/mnt", "/cachex", "/devices"]:
        assert not ig.is_ignored(p), p
    assert ig.contains_ignored("/mnt") and ig.contains_ignored("/") and not ig.contains_ignored("/usr")
    assert ig.contains_ignored("/etc")  # /etc/mtab
    no_var_run = IgnoreList.for_in_place("/kaniko", ignore_var_run=False, mountinfo=mi, resolve_symlinks=False)
    assert not no_var_run.is_ignored("/var/run/x")
    assert no_var_run.is_ignored("/var/run/secrets/kubernetes.io/serviceaccount/token")


def test_plain_root_list_is_empty_by_default_and_root_cannot_be_ignored():
    assert not IgnoreList.for_root()
    assert not IgnoreList.for_root().is_ignored("/anything")
    assert IgnoreList.for_root(["a/b"]).is_ignored("/a/b/c")
    with pytest.raises(UsageError, match="--ignore-path"):
        IgnoreList.of(["/"])


def test_missing_mountinfo_falls_back_to_defaults(tmp_path):
    ig = IgnoreList.for_in_place("/kaniko", mountinfo=tmp_path / "absent", resolve_symlinks=False)
    assert ig.is_ignored("/proc") and ig.is_ignored("/kaniko/x")
