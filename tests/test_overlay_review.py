"""Overlay stage roots against ``--no-layer-store`` in the corners of overlayfs: a stage that falls
back to whole-root walks with changes still held, hard links, type changes, renamed directories,
metadata-only changes of lower files, special files, and paths deleted and made again. Each build
is run both ways and the layers (listing and digests) and umoci's unpacked trees compared."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.test_overlay_snapshots import _archive, _file
from tests.test_stacked_run_uppers import assert_same_images, build, stacked_runs, unpacked_tree, layer_blobs, listing
from tests.test_stacked_run_uppers import base_image  # noqa: F401  (the fixture)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")


def _context(ctx: Path) -> None:
    (ctx / "archive.tar").write_bytes(_archive())
    for n in range(150):  # more than a snapshot records (overlaysnapshot.RECORD_LIMIT): a restack
        _file(ctx / f"many/f{n:03}", str(n))


def both(tmp_path: Path, registry, dockerfile: str, *flags: str, max_lower: int | None = None,
         partners: frozenset[str] = frozenset()) -> tuple[str, str]:
    """Build ``dockerfile`` with --no-layer-store and on a mounted root; assert the same images; the logs.
    ``partners``: files only the plain build's layers may carry in addition (see ``PARTNERS``)."""
    def one(name: str, extra: tuple[str, ...]) -> str:
        ctx = tmp_path / f"ctx-{name}"
        ctx.mkdir()
        _context(ctx)
        _, log = build(tmp_path, registry, name, dockerfile, *extra, *flags, cache=tmp_path / "xdg",
                       max_lower=max_lower if name == "stored" else None)
        return log

    # the two builds at once (separate processes, contexts, layouts and work dirs; the plain one leaves
    # the layer store alone): each waits on its RUNs' processes and mounts part of the time
    with ThreadPoolExecutor(max_workers=2) as pool:
        plain_build = pool.submit(one, "plain", ("--no-layer-store",))
        stored_build = pool.submit(one, "stored", ())
        logs = [plain_build.result(), stored_build.result()]
    assert "an overlay of 3 stored layer(s)" in logs[1]
    plain, stored = tmp_path / "layout-plain", tmp_path / "layout-stored"
    if not partners:
        assert_same_images(tmp_path, plain, stored)
        return logs[0], logs[1]
    plain_layers = [listing(blob) for blob in layer_blobs(plain)]
    stored_layers = [listing(blob) for blob in layer_blobs(stored)]
    assert len(plain_layers) == len(stored_layers)
    extra = [{m[0] for m in p} - {m[0] for m in s} for p, s in zip(plain_layers, stored_layers)]
    assert any(extra) and set().union(*extra) <= partners | {os.path.dirname(p) for p in partners}
    assert [[m for m in layer if m[0] not in names] for layer, names in zip(plain_layers, extra)] == stored_layers
    assert unpacked_tree(stored, tmp_path / "u-stored") == unpacked_tree(plain, tmp_path / "u-plain")
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


# base (test_stacked_run_uppers.BASE): /opt/app/sub/f hard-linked to /opt/app/hl (set-uid), /opt/keep/k,
# /opt/meta, /srv/tree/deep/t, /usr/share/doc/d, over busybox
CASES = {
    "hardlinks": """\
RUN echo more >> /opt/app/sub/f && ln /opt/keep/k /opt/app/k-link && ln /bin/busybox /opt/bb
RUN cat /opt/app/hl > /opt/seen-hl && echo again >> /opt/app/k-link && ln /opt/app/sub/f /opt/f2
COPY ctx.txt /opt/app/hl
RUN ln /opt/app/hl /opt/hl2 && rm /opt/app/sub/f
""",
    "types": """\
RUN rm /opt/meta && mkdir /opt/meta && echo x > /opt/meta/x && ln -s /opt/keep /opt/sym
RUN rm -rf /opt/meta && echo back > /opt/meta && rm /opt/sym && mkdir /opt/sym
COPY ctx.txt /opt/sym/c
RUN rm -rf /opt/sym && ln -s keep /opt/sym && rm -rf /opt/app/sub && echo f > /opt/app/sub
""",
    "rename": """\
RUN mv /srv/tree /srv/moved && mv /opt/keep/k /opt/keep/k-renamed
RUN mv /srv/moved /srv/tree && mv /usr/share/doc /usr/share/doc2
""",
    "metadata": """\
RUN chmod 600 /opt/meta && chown 7:8 /opt/keep/k && touch -d @1600000000 /srv/tree/deep/t && chmod 4700 /opt/app/hl
RUN chown 9:9 /opt/keep && chmod 711 /srv/tree
ADD archive.tar /
""",
    "whiteouts": """\
RUN echo t > /opt/only-here && mkdir -p /opt/d/e && echo e > /opt/d/e/f
COPY ctx.txt /opt/c
RUN rm /opt/only-here /opt/c && rm -rf /opt/d/e
COPY ctx.txt /opt/c
RUN rm -rf /opt/d && echo d > /opt/d && echo t2 > /opt/only-here
""",
    "opaque": """\
RUN rm -rf /opt/keep /srv/tree/deep && mkdir /opt/keep /srv/tree/deep
COPY ctx.txt /opt/keep/k
RUN echo k2 > /opt/keep/k2 && echo t > /srv/tree/deep/t
COPY ctx.txt /srv/tree/deep/c
RUN rm -rf /opt/keep && mkdir /opt/keep && echo 3 > /opt/keep/k3
""",
    # (the fifos go at the end: umoci's unpacked tree is read file by file, and a fifo would block)
    "special": """\
RUN mkfifo /opt/fifo /opt/keep/f2 && (mknod /opt/null c 1 3; mknod /opt/blk b 7 0; true)
RUN rm /opt/fifo && (mknod /opt/fifo c 1 5 || mkfifo -m 600 /opt/fifo) && chmod 600 /opt/keep/f2
RUN rm /opt/fifo /opt/keep/f2
""",
    "same-step": """\
RUN rm /opt/keep/k && echo new > /opt/keep/k && rm -rf /srv/tree/deep && mkdir /srv/tree/deep
RUN rm /opt/keep/k && echo new > /opt/keep/k && rm -rf /srv/tree && mkdir -p /srv/tree/deep && echo t > /srv/tree/deep/t
COPY ctx.txt /opt/keep/k
RUN rm /opt/keep/k && echo k > /opt/keep/k
""",
    "link-partner": """\
RUN rm /opt/app/hl
ADD archive.tar /
""",
    "mounts": """\
RUN --mount=type=tmpfs,target=/opt/app echo x > /opt/app/inside && echo y > /opt/outside
RUN --mount=type=tmpfs,target=/opt/keep/new/deeper ls /opt/app/sub && echo z > /opt/keep/new/z
RUN --mount=type=bind,source=many,target=/srv/tree/deep cat /srv/tree/deep/f001 > /opt/bound
""",
    "recorded": """\
COPY ctx.txt /opt/r
WORKDIR /opt/w
RUN echo z >> /opt/r && chmod 600 /opt/r && touch /opt/w/here && chmod 700 /opt/w
WORKDIR /
COPY ctx.txt /opt/r2
RUN rm /opt/r2 && mkdir /opt/r2
COPY ctx.txt /opt/r2/in
""",
}
# Under --single-snapshot the plain build's one walk sees the link count of a base file drop when
# another name of it (a hard link in the same stored layer) is removed or replaced, and carries the
# file again; on the overlay the stored inode is never touched, and the layer leaves it out, as
# BuildKit's overlay differ does (only the upper dir is read). The images unpack the same.
PARTNERS = {"link-partner": frozenset({"opt/app/sub/f"}), "types": frozenset({"opt/app/hl"}),
            "metadata": frozenset({"opt/app/sub/f"})}
EXTRA_FINAL = """
FROM {base}
COPY --from=work /opt /o
COPY --from=work /srv /s
RUN find /o /s -exec stat -c '%n %f %u %g %h %s' {{}} + | sort > /listing
"""


@pytest.mark.parametrize("flags", [("--target", "work"), ("--target", "work", "--single-snapshot"), ()],
                         ids=["work", "work-single", "final"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
@needs_root
def test_overlay_corners_give_the_plain_images(tmp_path, registry, base_image, case, flags):
    # the stage's own layers (--target work), and what a later stage copies from its root
    dockerfile = f"FROM {base_image} AS work\n" + CASES[case] + EXTRA_FINAL.format(base=base_image)
    both(tmp_path, registry, dockerfile, *flags,
         partners=PARTNERS.get(case, frozenset()) if "--single-snapshot" in flags else frozenset())


DEEP_THEN_COPIED = """\
FROM {base} AS work
RUN echo 1 > /opt/one && rm -rf /srv/tree/deep && mkdir /srv/tree/deep
COPY many/ /srv/many/
RUN rm -rf /srv/tree && mkdir -p /srv/tree/deep && echo 2 > /srv/tree/deep/two
COPY ctx.txt /opt/c
RUN rm /opt/c /srv/many/f001 && chmod 700 /srv/many
ADD archive.tar /

FROM {base}
COPY --from=work /srv /s
COPY --from=work /opt /o
RUN find /s /o | sort > /listing
"""


@pytest.mark.parametrize("max_lower", [6, 8, None])
@pytest.mark.slow
@needs_root
def test_copy_from_a_stage_that_fell_back_midway(tmp_path, registry, base_image, max_lower):
    # the work stage's stack fills at different steps (6 and 8 lower dirs at most; None: it never does),
    # and the next stage copies from a root that fell back to walks midway
    _, log = both(tmp_path, registry, DEEP_THEN_COPIED.format(base=base_image), max_lower=max_lower)
    assert ("walk the root" in log or " and applied in " in log) == (max_lower is not None)
