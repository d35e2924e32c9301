"""RUN diffs stacked on an overlay stage root (builder.overlayroot.stack_upper) give the images and layers
of the plain directory path (``--no-layer-store``, where each RUN's upper dir is applied by copy): creations,
changes, deletions (whiteouts), directories removed and made again (opaque), metadata-only changes and hard
links, over several RUN steps with COPY and WORKDIR between them, a later ``COPY --from`` of the stage, and a
stage with more RUN diffs than its stack may hold."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pybuildless.builder.stageroot import DirectoryRoot, StoreRoot, upper_keeper
from pybuildless.store import stack
from pybuildless.store.layers import LayerStore
from tests.buildkit import ROOT, write_context
from tests.fixtures.images import make_layer


EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}

# three layers: a tree with a hard link, a set-uid file and directories the stage changes later
BASE = """\
FROM {busybox}
RUN mkdir -p /opt/app/sub /opt/keep /srv/tree/deep && echo one > /opt/app/sub/f && ln /opt/app/sub/f /opt/app/hl \\
 && chmod 4755 /opt/app/sub/f && echo t > /srv/tree/deep/t && echo k > /opt/keep/k && echo m > /opt/meta
RUN echo more >> /opt/keep/k && mkdir -p /usr/share/doc && echo d > /usr/share/doc/d
"""

STAGES = """\
FROM {base} AS work
RUN mkdir -p /data/a/sub /data/b && echo 1 > /data/a/f && echo 2 > /data/b/g && ln /data/a/f /data/a/hl \\
 && ln -s f /data/a/sym && echo s > /data/a/sub/s && echo changed >> /opt/keep/k && rm /etc/group
COPY ctx.txt /data/a/
WORKDIR /data/w
RUN echo mod >> /data/a/f && rm /data/b/g /usr/share/doc/d && rm -rf /data/a/sub /srv/tree/deep \\
 && mkdir -p /etc/newdir && echo n > /etc/newdir/n && cat /data/a/ctx.txt > /data/w/seen
RUN rm -rf /data/b /opt/app/sub && mkdir /data/b /opt/app/sub && echo new > /data/b/n && echo g > /opt/app/sub/g
RUN chmod 700 /data/a && chown 1:2 /data/a/f && touch -d @1600000000 /data/a/hl /opt/meta && chmod 640 /opt/meta \\
 && chown 3:4 /opt/keep
COPY --chown=5:6 ctx.txt /data/copied.txt
RUN ln /data/b/n /data/b/n2 && ln /data/copied.txt /data/copied-link && ln /opt/keep/k /opt/keep/k2 \\
 && rm -rf /data/a && mkdir /data/a && echo again > /data/a/f
WORKDIR /data/w2
RUN echo last > /data/w2/last && rm /data/w/seen

FROM {base}
COPY --from=work /data /copied
COPY --from=work /opt /opt-copied
RUN cat /copied/b/n /copied/a/f > /both && rm /opt-copied/keep/k2 /opt/app/hl
"""

RUN_COUNT = {"work": 6, "final": 1}


def build(tmp_path: Path, registry, name: str, dockerfile: str, *flags: str, cache: Path,
          max_lower: int | None = None) -> tuple[Path, str]:
    """Build ``dockerfile`` into an OCI layout; (layout, debug log). ``max_lower`` lowers the number of
    lower dirs an overlay may stack (``store.stack.MAX_LOWER``) in the build's own process."""
    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": dockerfile, "ctx.txt": "from the context\n"})
    layout = tmp_path / f"layout-{name}"
    work = tmp_path / f"work-{name}"
    work.mkdir()
    prelude = f"import pybuildless.store.stack as s; s.MAX_LOWER = {max_lower}; " if max_lower else ""
    args = ["--context", str(ctx), "--no-push", "--oci-layout-path", str(layout), "-v", "debug",
            "--work-dir", str(work), *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache), "PYBUILDLESS_CLEANUP": "wait",
           **EPOCH}
    proc = subprocess.run([sys.executable, "-c", f"{prelude}from pybuildless.cli import executor_main; "
                           "executor_main()", *args], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    log = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, log
    # the stage roots, their stacked upper dirs included, went with the work dir, and nothing stays mounted
    assert os.listdir(work) == []
    assert "mounts left" not in log and "cannot unmount" not in log
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()
    return layout, log


def layer_blobs(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return [layout / "blobs" / "sha256" / layer["digest"].split(":")[1] for layer in manifest["layers"]]


def listing(blob: Path) -> list[tuple]:
    """Every member of a layer tar with what a tar says of it."""
    with tarfile.open(blob, mode="r:*") as tar:
        return [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.size, m.linkname,
                 tuple(sorted((k, v) for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr"))),
                 tar.extractfile(m).read() if m.isreg() else b"") for m in tar]


def unpacked_tree(layout: Path, out: Path) -> dict[str, tuple]:
    """The image's tree as umoci unpacks it: path -> (type, mode, owner, mtime, content or link target)."""
    subprocess.run(["umoci", "unpack", "--rootless" if os.geteuid() else "--keep-dirlinks", "--image",
                    f"{layout}", str(out)], check=True, capture_output=True)
    rootfs = out / "rootfs"
    tree = {}
    for path in sorted(rootfs.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(rootfs))
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "f"
        body = os.readlink(path) if kind == "l" else path.read_bytes() if kind == "f" else b""
        # (directories made by the build itself keep the time they were made: the same clamp in both)
        tree[rel] = (kind, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns if kind != "d" else None,
                     st.st_nlink if kind == "f" else None, body)
    return tree


def stacked_runs(log: str) -> int:
    return len(re.findall(r"overlay upper dir: \d+ entries read in [\d.]+ ms and stacked", log))


@pytest.fixture(scope="module")
def base_image(tmp_path_factory, registry, busybox_image) -> str:
    tmp = tmp_path_factory.mktemp("stacked-base")
    layout, _ = build(tmp, registry, "base", BASE.format(busybox=busybox_image), "--no-layer-store",
                      cache=tmp / "xdg")
    ref = registry.ref("stacked/base:1")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}", f"docker://{ref}"],
                   check=True, capture_output=True, timeout=120)
    return ref


def assert_same_images(tmp_path: Path, plain: Path, stacked: Path) -> None:
    plain_layers, stacked_layers = layer_blobs(plain), layer_blobs(stacked)
    assert [listing(b) for b in stacked_layers] == [listing(b) for b in plain_layers]
    assert [b.name for b in stacked_layers] == [b.name for b in plain_layers]  # the same digests, then
    assert unpacked_tree(stacked, tmp_path / "u-stacked") == unpacked_tree(plain, tmp_path / "u-plain")


@pytest.mark.parametrize("target,single", [("work", False), (None, False), ("work", True)])
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_stacked_run_diffs_give_the_layers_of_the_plain_path(tmp_path, registry, base_image, target, single):
    dockerfile = STAGES.format(base=base_image)
    # --single-snapshot: one walk at the end, over diffs that arrived by remounts, not by writes
    flags = (["--target", target] if target else []) + (["--single-snapshot"] if single else [])
    if single:
        # against the store root with every diff copied (no room to stack one): its one walk sees what
        # the plain directory's would, except a file whose hard link in a lower layer was removed (its
        # link count drops in a directory, not in a stored layer)
        plain, plain_log = build(tmp_path, registry, "plain", dockerfile, *flags, cache=tmp_path / "xdg",
                                 max_lower=3)
    else:
        plain, plain_log = build(tmp_path, registry, "plain", dockerfile, "--no-layer-store", *flags,
                                 cache=tmp_path / "xdg")
    stacked, log = build(tmp_path, registry, "stacked", dockerfile, *flags, cache=tmp_path / "xdg")
    assert stacked_runs(plain_log) == 0
    assert "an overlay of 3 stored layer(s)" in log
    # every RUN was stacked, none copied
    assert stacked_runs(log) == (RUN_COUNT["work"] if target else sum(RUN_COUNT.values()))
    assert " and applied in " not in log
    assert_same_images(tmp_path, plain, stacked)
    if target:
        return
    # what the layers hold, from the tar itself (an independent reading of the same files)
    final = listing(layer_blobs(stacked)[-1])
    names = {m[0]: m for m in final}
    assert names["both"][-1] == b"new\nagain\n"
    assert "opt-copied/keep/.wh.k2" in names and "opt/app/.wh.hl" in names


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_a_stage_deeper_than_the_stack_limit_applies_the_rest(tmp_path, registry, base_image):
    dockerfile = STAGES.format(base=base_image)
    plain, _ = build(tmp_path, registry, "plain", dockerfile, "--no-layer-store", cache=tmp_path / "xdg")
    # 3 base layers + room for 3 more lower dirs: the first RUN diffs stack, then the stack is full
    limited, log = build(tmp_path, registry, "limited", dockerfile, cache=tmp_path / "xdg", max_lower=6)
    stacked, applied = stacked_runs(log), len(re.findall(r"overlay upper dir: .* and applied in ", log))
    assert stacked >= 2 and applied >= 2 and stacked + applied == sum(RUN_COUNT.values())
    assert "layers, more than overlayfs stacks (6)" in log
    assert_same_images(tmp_path, plain, limited)


def test_depth_refused_names_both_limits(monkeypatch):
    assert stack.depth_refused(3) == ""
    monkeypatch.setattr(stack, "MAX_LOWER", 4)
    assert stack.depth_refused(5) == "5 layers, more than overlayfs stacks (4)"
    monkeypatch.setattr(stack, "MAX_LOWER", 500)
    too_many = os.sysconf("SC_PAGE_SIZE") // len("/proc/self/fd/1024:") + 1
    assert "do not fit in one page of mount options" in stack.depth_refused(too_many)


def test_only_a_mounted_store_root_keeps_run_uppers(tmp_path):
    plain = DirectoryRoot(tmp_path / "a")
    plain.path.mkdir()
    plain.lay([])
    # outside a build's own mount namespace the store root is a copy: RUN diffs are applied onto it
    layer = make_layer(tmp_path / "layers", {"etc/x": b"x"})
    copied = StoreRoot(tmp_path / "b", LayerStore(tmp_path / "store"))
    copied.path.mkdir()
    assert copied.lay([layer]) == "laid from the layer store"
    assert upper_keeper(plain.path) is None and upper_keeper(copied.path) is None
    copied.release()
    plain.release()
