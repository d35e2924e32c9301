"""COPY --from=<image> with the layer cache, as BuildKit keys it: on the image's digest.

BuildKit resolves an image source to its digest and keys the steps that use it on that digest
(frontend/dockerfile/dockerfile2llb/convert.go@eeb7b65ab7d6: the --from image is an llb.Image
state; its cache key is the resolved manifest), so an unchanged rebuild is all cache hits and,
since history times come from the layers (moby builder/builder-next/exporter/writer.go@v20.10.24
normalizeLayersAndHistory; the cache keeps each layer's time), the same image digest."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.buildkit import executor, unpack, write_context
from tests.test_cache import steps

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def _copy_image(src: str, dest: str) -> None:
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{src}", f"docker://{dest}"], check=True, capture_output=True, timeout=120)


def test_copy_from_image_is_cached_on_its_digest(tmp_path, registry, busybox_image):
    external = registry.ref("fidelity/external:1")
    _copy_image(busybox_image, external)
    dockerfile = (f"FROM {busybox_image}\nRUN echo one > /one\nCOPY --from={external} /etc/passwd /x\n"
                  "ENV AFTER=1\nRUN cat /x > /y\nCMD [\"sh\"]\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    ref = registry.ref("fidelity/cached-from:1")

    def build(n: int):
        digest_file = tmp_path / f"digest{n}"
        proc = executor("-c", str(ctx), "-d", ref, "--cache", "--digest-file", str(digest_file), cwd=tmp_path)
        return steps(proc.stderr), digest_file.read_text().strip()

    cold, cold_digest = build(1)
    assert set(cold.values()) == {"built"}, cold
    warm, warm_digest = build(2)
    copy_step = f"COPY --from={external} /etc/passwd /x"
    assert warm[copy_step] == "cached" and warm["RUN cat /x > /y"] == "cached", warm
    assert set(warm.values()) == {"cached"}, warm
    assert warm_digest == cold_digest
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert (image.rootfs / "y").read_bytes() == (image.rootfs / "etc/passwd").read_bytes()
    history = image.config["history"]
    assert image.config["created"] == history[-1]["created"]

    # The tag now names another image: the COPY --from step and everything after it run again.
    (tmp_path / "other").mkdir()
    other_ctx = write_context(tmp_path / "other", {"Dockerfile": f"FROM {busybox_image}\n"
                                                   "RUN echo 'changed:x:1:1::/:/bin/sh' >> /etc/passwd\n"})
    executor("-c", str(other_ctx), "-d", external, cwd=tmp_path)
    moved, moved_digest = build(3)
    assert moved["RUN echo one > /one"] == "cached"
    assert moved[copy_step] == "built" and moved["RUN cat /x > /y"] == "built", moved
    assert moved_digest != cold_digest
    assert b"changed:x:1:1" in (unpack(f"docker://{ref}", tmp_path / "u3").rootfs / "y").read_bytes()
