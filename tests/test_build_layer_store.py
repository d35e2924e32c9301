"""Builds with the layer store (the default): stage roots laid from the local store of unpacked layers give the
same images as extracting the base's tars, alone, side by side on one store, and after damage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pybuildless.image.descriptor import Digest
from pybuildless.store.layers import LayerStore
from tests.buildkit import ROOT, executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}

# a base of three layers: hard links, a set-uid file, then whiteouts and an opaque directory
BASE = """\
FROM {busybox}
RUN mkdir -p /opt/app/sub /opt/gone && echo one > /opt/app/sub/f && echo x > /opt/gone/y \\
 && ln /opt/app/sub/f /opt/app/hl && chmod 4755 /opt/app/sub/f && mkdir -p /usr/share/doc && echo d > /usr/share/doc/d
RUN rm -rf /opt/gone /etc/group /opt/app/sub && mkdir /opt/app/sub && echo two > /opt/app/sub/g \\
 && echo more >> /usr/share/doc/d
"""
# (not / or its listing: the root's own time is when the stage root was made, in every build; no
# link counts: an overlay reports 1 for a merged directory, and a lower file's count for its names)
FIRST = """\
FROM {base}
RUN ls -la --full-time /opt/app /opt/app/sub /usr/share/doc | awk '{{$2=""; print}}' > /listing \\
 && test ! -e /opt/gone \\
 && test ! -e /etc/group && test ! -e /opt/app/sub/f && cat /opt/app/hl /opt/app/sub/g > /seen && echo ok > /opt/app/new
FROM {base} AS second
COPY --from=0 /listing /seen /
RUN echo changed > /opt/app/hl && rm /usr/share/doc/d
"""
SECOND = """\
FROM {base}
RUN mkdir /opt/app/sub/more && echo 2 > /opt/app/sub/more/x && rm -f /opt/app/hl
"""


def build(tmp_path: Path, registry, name: str, dockerfile: str, *flags: str, cache: Path | None = None,
          wait: bool = True):
    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": dockerfile})
    digest_file = tmp_path / f"digest-{name}"
    (tmp_path / "work").mkdir(exist_ok=True)
    args = ["--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "-d", registry.ref(f"store/{name}:1"),
            "--digest-file", str(digest_file), "-v", "debug", "--work-dir", str(tmp_path / "work"), *flags]
    env = {**EPOCH, "XDG_CACHE_HOME": str(cache or tmp_path / "xdg-unused")}
    if wait:
        proc = executor(*args, cwd=tmp_path, env=env)
        return digest_file.read_text(), proc.stderr.decode(errors="replace")
    return subprocess.Popen(
        [sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()", *args],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE), digest_file


@pytest.fixture(scope="module")
def base_image(tmp_path_factory, registry, busybox_image) -> str:
    tmp = tmp_path_factory.mktemp("store-base")
    build(tmp, registry, "base", BASE.format(busybox=busybox_image))
    return registry.ref("store/base:1")


def test_stage_roots_from_the_store_give_the_same_images(tmp_path, registry, base_image):
    dockerfile = FIRST.format(base=base_image)
    plain, plain_log = build(tmp_path, registry, "plain", dockerfile, "--no-layer-store")
    cache = tmp_path / "cache"
    stored, stored_log = build(tmp_path, registry, "stored", dockerfile, "--layer-store", cache=cache)
    again, again_log = build(tmp_path, registry, "again", dockerfile, "--layer-store", cache=cache)
    assert "stored layer(s)" not in plain_log and "stored layer(s)" in stored_log
    # as root the stage roots are overlay mounts of the stored layers, and gone when the build ends
    assert "an overlay of 3 stored layer(s)" in stored_log and "an overlay of 3 stored layer(s)" in again_log
    assert os.listdir(tmp_path / "work") == []
    assert plain == stored == again
    store = LayerStore(cache / "pybuildless")
    entries = {e.diff_id for e in store.entries()}
    base_config = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{base_image}"],
        capture_output=True, check=True).stdout)
    assert entries == {Digest.parse(d) for d in base_config["rootfs"]["diff_ids"]}
    # the second build took every layer from the store: nothing was unpacked again
    assert "unpacked sha256:" in stored_log and "unpacked sha256:" not in again_log
    image = unpack(f"docker://{registry.ref('store/stored:1')}", tmp_path / "u")
    assert (image.rootfs / "seen").read_text() == "one\ntwo\n"
    assert (image.rootfs / "opt/app/hl").read_text() == "changed\n" and not (image.rootfs / "usr/share/doc/d").exists()


def test_two_builds_at_once_on_one_store_match_builds_alone(tmp_path, registry, base_image):
    first, second = FIRST.format(base=base_image), SECOND.format(base=base_image)
    alone = [build(tmp_path, registry, "alone1", first, "--no-layer-store")[0],
             build(tmp_path, registry, "alone2", second, "--no-layer-store")[0]]
    cache = tmp_path / "cache"
    procs = [build(tmp_path, registry, "both1", first, "--layer-store", cache=cache, wait=False),
             build(tmp_path, registry, "both2", second, "--layer-store", cache=cache, wait=False)]
    together = []
    logs = []
    for proc, digest_file in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")
        together.append(digest_file.read_text())
        logs.append(err.decode(errors="replace"))
    assert together == alone
    # the shared base layers were unpacked once between the two builds
    unpacked = [line.split("unpacked ")[1].split()[0] for log in logs for line in log.splitlines()
                if "layer store: unpacked" in line]
    assert len(unpacked) == len(set(unpacked)) == len(list(LayerStore(cache / "pybuildless").entries()))


def test_damaged_store_entry_is_unpacked_again(tmp_path, registry, base_image):
    dockerfile = SECOND.format(base=base_image)
    cache = tmp_path / "cache"
    first, _ = build(tmp_path, registry, "d1", dockerfile, "--layer-store", cache=cache)
    store = LayerStore(cache / "pybuildless")
    damaged = None
    for entry in store.entries():
        target = entry.path / "fs" / "opt" / "app" / "sub" / "g"
        if target.exists():
            target.unlink()
            damaged = entry.diff_id
    assert damaged is not None
    second, log = build(tmp_path, registry, "d2", dockerfile, "--layer-store", cache=cache)
    assert second == first
    assert f"entry {damaged} changed on disk" in log and f"unpacked {damaged}" in log
    assert store.verify(damaged)


def test_killed_build_leaves_no_mount_behind(tmp_path, registry, base_image):
    proc, _ = build(tmp_path, registry, "killed", f"FROM {base_image}\nRUN sleep 60\n", "--layer-store",
                    cache=tmp_path / "cache", wait=False)
    seen = b""
    try:
        while b"laid from the layer store" not in seen:
            line = proc.stderr.readline()
            assert line, "the build ended before its stage root was laid"
            seen += line
        assert b"an overlay of 3 stored layer(s)" in seen
        while b"RUN steps run on overlay mounts" not in seen:  # the step's sandbox is up
            line = proc.stderr.readline()
            assert line, "the build ended before its RUN"
            seen += line
    finally:
        proc.kill()
        proc.wait()
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()  # the mounts lived in the build's own namespace
    assert not list((tmp_path / "cache" / "pybuildless" / "layers" / ".tmp").iterdir())


def test_store_is_trimmed_to_its_size_limit_after_a_build(tmp_path, registry, base_image):
    cache = tmp_path / "cache"
    dockerfile = SECOND.format(base=base_image)
    build(tmp_path, registry, "big", dockerfile, cache=cache)  # the store is on by default
    store = LayerStore(cache / "pybuildless")
    entries = sorted(store.entries(), key=lambda e: e.last_used)
    assert len(entries) == 3 and all(e.disk_bytes > 0 for e in entries)
    # the layers are used lowest first: room for the two upper ones drops the lowest after the build
    limit = entries[1].disk_bytes + entries[2].disk_bytes
    _, log = build(tmp_path, registry, "trim", dockerfile, "--layer-store-max-size", str(limit), cache=cache)
    assert [e.diff_id for e in store.entries() if e.diff_id != entries[0].diff_id] == \
        sorted([entries[1].diff_id, entries[2].diff_id], key=str)
    assert entries[0].diff_id not in {e.diff_id for e in store.entries()}
    assert "removed 1 least recently used layer(s)" in log
    # 'none' lifts the limit: the lowest layer is stored again and stays
    build(tmp_path, registry, "none", dockerfile, "--layer-store-max-size", "none", cache=cache)
    assert {e.diff_id for e in store.entries()} == {e.diff_id for e in entries}
