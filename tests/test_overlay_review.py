"""Overlay stage roots against ``--no-layer-store`` in the corners of overlayfs: a stage that falls
back to whole-root walks with changes still held, hard links, type changes, renamed directories,
metadata-only changes of lower files, special files, and paths deleted and made again. Each build
is run both ways and the layers (listing and digests) and umoci's unpacked trees compared."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.test_overlay_snapshots import _archive, _file
from tests.test_stacked_run_uppers import assert_same_images, build, stacked_runs, layer_blobs, listing
from tests.test_stacked_run_uppers import base_image  # noqa: F401  (the fixture)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")


def _context(ctx: Path) -> None:
    (ctx / "archive.tar").write_bytes(_archive())
    for n in range(150):  # more than a snapshot records (overlaysnapshot.RECORD_LIMIT): a restack
        _file(ctx / f"many/f{n:03}", str(n))


def both(tmp_path: Path, registry, dockerfile: str, *flags: str, max_lower: int | None = None) -> tuple[str, str]:
    """Build ``dockerfile`` with --no-layer-store and on a mounted root; assert the same images; the logs."""
    logs = []
    for name, extra in (("plain", ("--no-layer-store",)), ("stored", ())):
        ctx = tmp_path / f"ctx-{name}"
        ctx.mkdir()
        _context(ctx)
        layout, log = build(tmp_path, registry, name, dockerfile, *extra, *flags, cache=tmp_path / "xdg",
                            max_lower=max_lower if name == "stored" else None)
        logs.append(log)
    assert "an overlay of 3 stored layer(s)" in logs[1]
    assert_same_images(tmp_path, tmp_path / "layout-plain", tmp_path / "layout-stored")
    return logs[0], logs[1]


HELD_THEN_WALKED = """\
FROM {base}
RUN echo 1 > /r1
COPY many/ /srv/many/
COPY ctx.txt /opt/c
ADD archive.tar /
"""


@pytest.mark.slow
@needs_root
def test_changes_held_when_the_stage_falls_back_to_walks_are_still_reported(tmp_path, registry, base_image):
    # the RUN's mount points leave /etc with a new mtime its snapshot does not look at (held); the big
    # COPY cannot stack the upper dir (3 base layers and the RUN's 2 dirs fill the stack) and the
    # stage walks the root from then on; ADD to / looks at the whole root, and the plain build
    # reports /etc there
    _, log = both(tmp_path, registry, HELD_THEN_WALKED.format(base=base_image), max_lower=5)
    assert stacked_runs(log) == 1 and "walk the root" in log
    added = dict((m[0], m) for m in listing(layer_blobs(tmp_path / "layout-plain")[-1]))
    assert "etc" in added  # what makes the test meaningful: the held change reaches the image
