"""The Docker engine fixture itself: a container from the registry fixture runs and prints."""

from __future__ import annotations

import platform


def test_engine_runs_the_executor_image(dockerd, executor_images, tmp_path):
    out = dockerd.docker("run", "--rm", "--network", "host", "--entrypoint", "/busybox/sh",
                         executor_images.ref("debug"), "-c", "uname -m; /kaniko/executor --help 2>&1 | head -n 1")
    lines = out.stdout.decode().splitlines()
    assert lines[0] == platform.machine()
    assert "Usage" in lines[1] or "usage" in lines[1].lower(), lines
