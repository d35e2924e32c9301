"""RUN --mount (cache, secret, bind, tmpfs) and --network, end to end."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.buildkit import executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

SECRET = "s3cr3t-value-for-tests-9f8e7d"


def all_blobs(tmp_path, ref: str) -> bytes:
    out = tmp_path / "blobs"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}"],
                   check=True, capture_output=True)
    data = b""
    for p in out.iterdir():
        raw = p.read_bytes()
        data += raw
        if raw[:2] == b"\x1f\x8b":
            import gzip
            data += gzip.decompress(raw)
    return data


def test_secrets_reach_run_but_nothing_else(tmp_path, registry, busybox_image):
    (tmp_path / "token").write_text(SECRET)
    dockerfile = f"""\
FROM {busybox_image}
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = "{SECRET[:6]}$(echo {SECRET[6:]})" && echo file-ok > /file-ok
RUN --mount=type=secret,id=envtok,env=TOKEN test "$TOKEN" = "$(cat /etc/passwd >/dev/null; echo $TOKEN)" && test -n "$TOKEN" && echo env-ok > /env-ok
RUN --mount=type=secret,id=absent echo skipped-ok > /skipped-ok
RUN test ! -e /run/secrets/tok
"""
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    ref = registry.ref("mounts/secret:1")
    proc = executor("-c", str(ctx), "-d", ref, "--secret", f"id=tok,src={tmp_path / 'token'}",
                    "--secret", "id=envtok,env=MY_TOKEN", "-v", "trace", cwd=tmp_path, env={"MY_TOKEN": SECRET})
    image = unpack(f"docker://{ref}", tmp_path / "u")
    for marker in ("file-ok", "env-ok", "skipped-ok"):
        assert (image.rootfs / marker).exists()
    assert not (image.rootfs / "run/secrets").exists()
    assert SECRET.encode() not in all_blobs(tmp_path, ref)
    assert SECRET not in json.dumps(image.config)
    assert SECRET.encode() not in proc.stdout + proc.stderr


def test_required_secret_missing_fails(tmp_path, registry, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN --mount=type=secret,id=x,required=true true\n"})
    proc = executor("-c", str(ctx), "-d", registry.ref("mounts/req:1"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and b"Dockerfile:2" in proc.stderr and b"required" in proc.stderr


def test_cache_mount_persists_between_builds_and_stays_out_of_the_image(tmp_path, registry, busybox_image):
    dockerfile = (f"FROM {busybox_image}\nRUN --mount=type=cache,target=/var/cache/app "
                  "echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    cache_dir = tmp_path / "cachedir"
    counts = []
    for n in range(2):
        ref = registry.ref(f"mounts/cache:{n}")
        executor("-c", str(ctx), "-d", ref, "--cache-dir", str(cache_dir), cwd=tmp_path)
        image = unpack(f"docker://{ref}", tmp_path / f"u{n}")
        counts.append((image.rootfs / "count").read_text().strip())
        assert not (image.rootfs / "var/cache/app/log").exists()
    assert counts == ["1", "2"]


def test_bind_and_tmpfs_mounts(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image} AS tools
RUN mkdir /tools && echo tool-data > /tools/data
FROM {busybox_image}
RUN --mount=type=bind,source=src,target=/mnt/src cat /mnt/src/a.txt > /from-context && \\
    if test -e /mnt/src/ignored.txt; then echo leak > /leak; fi && \\
    if echo x > /mnt/src/new 2>/dev/null; then echo writable > /writable; fi
RUN --mount=type=bind,from=tools,source=/tools,target=/t cp /t/data /from-stage
RUN --mount=type=tmpfs,target=/scratch echo tmp > /scratch/file && cat /scratch/file > /from-tmpfs
RUN --network=none cat /proc/net/dev | grep -c ":" > /interfaces
"""
    files = {"src/a.txt": "context-data\n", "src/ignored.txt": "no", ".dockerignore": "src/ignored.txt\n"}
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, **files})
    ref = registry.ref("mounts/bind:1")
    executor("-c", str(ctx), "-d", ref, cwd=tmp_path)
    image = unpack(f"docker://{ref}", tmp_path / "u")
    r = image.rootfs
    assert (r / "from-context").read_text() == "context-data\n"
    assert not (r / "leak").exists() and not (r / "writable").exists()
    assert (r / "from-stage").read_text() == "tool-data\n"
    assert (r / "from-tmpfs").read_text() == "tmp\n" and not (r / "scratch/file").exists()
    assert (r / "interfaces").read_text().strip() == "1"  # loopback only
    # Docker 20.10's BuildKit keeps the mount points it made, empty (tests/differential/run_mount_*)
    assert os.listdir(r / "mnt/src") == [] and os.listdir(r / "t") == [] and os.listdir(r / "scratch") == []
    assert not (ctx / "src/new").exists()
