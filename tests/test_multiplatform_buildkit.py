"""A foreign-platform build against BuildKit: Docker 20.10's builder builds the same Dockerfile for
``--platform linux/arm64`` with the same qemu-user-static handler; the two arm64 images must be
the same (file tree, config, layers), compared as the differential corpus compares
(``tests.differential.compare``: only its listed allowances)."""

from __future__ import annotations

import os

import pytest

from pybuildless.builder import binfmt
from pybuildless.image.descriptor import Platform
from tests.buildkit import executor, unpack, write_context
from tests.differential.compare import BUILDKIT, ImageView, differences
from tests.fixtures.foreign import arm64_image, arm64_layout, arm64_rootfs  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot, dockerd)")]

DOCKERFILE = """\
ARG BASE
FROM $BASE
ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM
ENV KIND=emulated
RUN uname -m > /arch && echo "$TARGETPLATFORM $TARGETARCH on $BUILDPLATFORM" > /platforms \\
 && mkdir -p /opt/tools && ln -s /bin/busybox /opt/tools/bb && touch -d @1700000000 /opt/tools/stamp
COPY f /opt/f
WORKDIR /opt
CMD ["cat", "/arch"]
"""


def test_arm64_image_equals_buildkits(tmp_path, dockerd, registry, arm64_image):
    assert binfmt.emulator_for(Platform.parse("linux/arm64")) is not None, "run `make deps` (qemu-user-static)"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "f": "file\n"})
    ours, theirs = registry.ref("mpb/app:pybuildless"), registry.ref("mpb/app:buildkit")
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--custom-platform", "linux/arm64",
             "--build-arg", f"BASE={arm64_image}", "--destination", ours, cwd=tmp_path)
    dockerd.buildkit_build(ctx, theirs, "--platform", "linux/arm64", "--build-arg", f"BASE={arm64_image}")
    dockerd.docker("push", theirs)
    a, b = unpack(f"docker://{ours}", tmp_path / "a"), unpack(f"docker://{theirs}", tmp_path / "b")
    assert (b.rootfs / "arch").read_text() == "aarch64\n"  # BuildKit ran it under the same emulator
    assert (a.rootfs / "platforms").read_text() == (b.rootfs / "platforms").read_text()
    for key in ("architecture", "os", "variant"):
        assert a.config.get(key) == b.config.get(key), key
    problems = differences(ImageView.of(a), ImageView.of(b), BUILDKIT, compare_layers=True)
    assert not problems, "\n".join(problems.values())
