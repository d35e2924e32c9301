"""The COPY cache key covers what decides the copied files' metadata: a stale hit would ship the
wrong owner or mode. BuildKit keys a COPY by its options (``--chown`` is part of the FileOp's
definition: llb.Copy with ChownOpt) and by the content hash of its sources, which covers the file
mode (fsutil's Stat carries mode, uid, gid; the context is sent as 0:0)."""

from __future__ import annotations

import os

import pytest

from tests.buildkit import unpack, write_context
from tests.test_cache import build, steps

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def test_chown_change_is_a_cache_miss(tmp_path, registry, busybox_image):
    ref = registry.ref("edges/chown:1")
    results = {}
    for owner in ("1000:1000", "2000:3000"):
        ctx = write_context(tmp_path / f"ctx-{owner[0]}", {
            "Dockerfile": f"FROM {busybox_image}\nCOPY --chown={owner} app.txt /app.txt\n",
            "app.txt": "same content"})
        got = steps(build(tmp_path, ctx, ref).stderr)
        results[owner] = got[f"COPY --chown={owner} app.txt /app.txt"]
        tree = unpack(f"docker://{ref}", tmp_path / f"img-{owner[0]}").tree()
        assert tree["/app.txt"][2:4] == tuple(int(x) for x in owner.split(":")), tree["/app.txt"]
    assert results == {"1000:1000": "built", "2000:3000": "built"}


def test_mode_change_of_a_context_file_is_a_cache_miss(tmp_path, registry, busybox_image):
    ref = registry.ref("edges/mode:1")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nCOPY run.sh /run.sh\n",
                                           "run.sh": "#!/bin/sh\necho hi\n"})
    os.chmod(ctx / "run.sh", 0o644)
    assert steps(build(tmp_path, ctx, ref).stderr)["COPY run.sh /run.sh"] == "built"
    assert unpack(f"docker://{ref}", tmp_path / "a").tree()["/run.sh"][1] == 0o644
    os.chmod(ctx / "run.sh", 0o755)
    assert steps(build(tmp_path, ctx, ref).stderr)["COPY run.sh /run.sh"] == "built"
    assert unpack(f"docker://{ref}", tmp_path / "b").tree()["/run.sh"][1] == 0o755
    # and unchanged again: a hit
    assert steps(build(tmp_path, ctx, ref).stderr)["COPY run.sh /run.sh"] == "cached"
