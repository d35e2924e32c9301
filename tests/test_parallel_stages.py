"""Independent stages build side by side (their steps overlap in time); their output still comes
out in stage order."""

from __future__ import annotations

import os
import re

import pytest

from tests.buildkit import executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def span(name: str) -> str:
    """Shell that records when the step starts and ends (/proc/uptime: one clock for every
    process on the machine) around a sleep long enough for a concurrent stage to start."""
    uptime = "cut -d' ' -f1 /proc/uptime"
    return (f"mkdir /{name} && {uptime} > /{name}/start && sleep 2 && {uptime} > /{name}/end && "
            f"echo {name} > /{name}/value")


def interval(directory) -> tuple[float, float]:
    return float((directory / "start").read_text()), float((directory / "end").read_text())


def test_parallel_stages_output_in_order(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image} AS one
RUN echo one-out && {span("one")}
FROM {busybox_image} AS two
RUN echo two-out && {span("two")}
FROM {busybox_image} AS broken-but-unused
RUN exit 3
FROM {busybox_image}
COPY --from=one /one /one
COPY --from=two /two /two
"""
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    ref = registry.ref("parallel/app:1")
    proc = executor("-c", str(ctx), "-d", ref, "--jobs", "2", cwd=tmp_path)
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert (image.rootfs / "one/value").read_text() == "one\n" and (image.rootfs / "two/value").read_text() == "two\n"
    # the two RUN steps ran at the same time: each started before the other ended
    (start1, end1), (start2, end2) = interval(image.rootfs / "one"), interval(image.rootfs / "two")
    assert max(start1, start2) < min(end1, end2), f"stages did not overlap: one {start1}-{end1}, two {start2}-{end2}"
    err = proc.stderr.decode()
    stages = [int(m) for m in re.findall(r"\[stage (\d+)/\d+\]", err)]
    assert stages == sorted(stages), "step lines of different stages must not interleave"
    out = proc.stdout.decode()
    assert out.index("one-out") < out.index("two-out")


def test_failure_in_a_parallel_stage_fails_the_build(tmp_path, registry, busybox_image):
    dockerfile = (f"FROM {busybox_image} AS a\nRUN sleep 0.5 && exit 7\nFROM {busybox_image} AS b\nRUN true\n"
                  f"FROM {busybox_image}\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    proc = executor("-c", str(ctx), "-d", registry.ref("parallel/fail:1"), "--jobs", "2", cwd=tmp_path, check=False)
    assert proc.returncode == 7 and b"Traceback" not in proc.stderr
