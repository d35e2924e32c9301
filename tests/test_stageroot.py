"""Stage roots (builder.stageroot) and a StageBuilder run on one without the whole build.

No CLI, registry or sandbox: layers are written from temp trees by the layer writer, and the
in-place root is only ever asked to keep a copy elsewhere (``/`` is never wiped here).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from pybuildless.builder import imageconfig
from pybuildless.builder.base import BaseImage
from pybuildless.builder.copy import SourceRoot
from pybuildless.builder.options import BuildOptions
from pybuildless.builder.progress import BufferedProgress
from pybuildless.builder.runsupport import Secrets
from pybuildless.builder.sources import BuildSources
from pybuildless.builder.stage import BuildClock, LayerWriting, StageBuilder, StageCache, StepParts
from pybuildless.builder.stageroot import DirectoryRoot, InPlaceRoot, StageRoots, StoreRoot
from pybuildless.dockerfile.args import GlobalArgs, StageEnv
from pybuildless.dockerfile.parser import parse_dockerfile
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.layer import whole_root_changes, write_layer
from pybuildless.image.descriptor import Platform
from pybuildless.registry.options import RegistryOptions
from pybuildless.store.layers import LayerStore
from tests.stepkit import SELF


def _layer(tree: Path, out: Path, files: dict[str, str]):
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    return write_layer(tree, whole_root_changes(tree), out)


@pytest.fixture
def layers(tmp_path):
    out = tmp_path / "layers"
    out.mkdir()
    lower = _layer(tmp_path / "t1", out, {"etc/base": "1", "etc/over": "lower"})
    upper = _layer(tmp_path / "t2", out, {"etc/over": "upper", "opt/new": "2"})
    return [lower, upper]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_directory_root_lays_in_order_and_takes_its_baseline(tmp_path, layers) -> None:
    root = DirectoryRoot(tmp_path / "rootfs")
    root.path.mkdir()
    assert root.snapshotter is None
    assert root.lay(layers) == "extracted"
    assert _tree(root.path) == {"etc/base": "1", "etc/over": "upper", "opt/new": "2"}
    assert root.snapshotter is not None and root.snapshotter.take().empty  # the laid root is the baseline
    (root.path / "etc" / "made").write_text("x")
    changed = {p.lstrip("/") for p in root.snapshotter.take().paths}
    assert changed == {"etc", "etc/made"}  # the new file and its directory, whose mtime moved; no base file
    assert root.kept(layers, tmp_path / "spare") == root.path and not (tmp_path / "spare").exists()
    root.release()


def test_apply_adds_a_layer_to_a_laid_root(tmp_path, layers) -> None:
    root = DirectoryRoot(tmp_path / "rootfs")
    root.path.mkdir()
    root.lay(layers[:1])
    root.apply(layers[1:])
    assert _tree(root.path) == {"etc/base": "1", "etc/over": "upper", "opt/new": "2"}
    root.release()


def test_store_root_gives_the_tree_extraction_gives(tmp_path, layers) -> None:
    extracted = DirectoryRoot(tmp_path / "a")
    extracted.path.mkdir()
    extracted.lay(layers)
    stored = StoreRoot(tmp_path / "b", LayerStore(tmp_path / "store"))
    stored.path.mkdir()
    assert stored.lay(layers) == "laid from the layer store"
    assert _tree(stored.path) == _tree(extracted.path)
    assert stored.snapshotter is not None and stored.snapshotter.take().empty
    stored.release()
    extracted.release()


def test_in_place_root_keeps_a_copy_for_later_stages(tmp_path, layers) -> None:
    root = InPlaceRoot(IgnoreList.for_root())  # never laid or wiped here: its path is this machine's /
    assert root.path == Path("/")
    spare = tmp_path / "stages" / "0" / "rootfs"
    assert root.kept(layers, spare) == spare
    assert _tree(spare) == {"etc/base": "1", "etc/over": "upper", "opt/new": "2"}


def test_the_kind_of_root_is_chosen_in_one_place(tmp_path) -> None:
    plain = StageRoots().open(tmp_path / "s0", BuildOptions(layer_store=False))
    assert type(plain) is DirectoryRoot and plain.path == tmp_path / "s0" / "rootfs" and plain.path.is_dir()
    roots = StageRoots(store=LayerStore(tmp_path / "store"))
    stored = roots.open(tmp_path / "s1", BuildOptions())
    assert type(stored) is StoreRoot and stored.path.is_dir()
    roots.close()


def _builder(tmp_path: Path, text: str, *, epoch: int | None) -> StageBuilder:
    dockerfile = parse_dockerfile(text)
    context = tmp_path / "context"
    context.mkdir()
    (context / "a.txt").write_text("A")
    (tmp_path / "layers").mkdir()
    sources = BuildSources(SourceRoot(str(context), is_context=True), dockerfile, {}, platform=Platform(),
                           registry=RegistryOptions(), blob_dir=tmp_path / "blobs", work=tmp_path)

    def no_sandbox(root):
        raise AssertionError("no RUN here")

    parts = StepParts(sources, Secrets(), scratch_dir=tmp_path, run_cache_dir=tmp_path / "run-cache",
                      sandbox_for=no_sandbox)
    root = DirectoryRoot(tmp_path / "rootfs")
    root.path.mkdir()
    base = BaseImage(imageconfig.scratch_config(Platform()), [], "scratch")
    scope = StageEnv(GlobalArgs.resolve(dockerfile.meta_args, {}), {}, image_env=[])
    return StageBuilder(dockerfile.stages[0], base, root=root, parts=parts, layers=LayerWriting(tmp_path / "layers"),
                        cache=StageCache(), clock=BuildClock.at(epoch), dockerfile=dockerfile, platform=None,
                        position=(1, 1), variables=scope, progress=BufferedProgress())


def test_a_stage_builds_from_its_parts_alone(tmp_path) -> None:
    builder = _builder(tmp_path, f"FROM scratch\nENV A=1\nCOPY --chown={SELF} a.txt /a.txt\nWORKDIR /app\n", epoch=0)
    result = builder.run()
    history = result.config["history"]
    # BuildKit: ENV has no layer; COPY and WORKDIR (not /) each commit one; a fixed epoch is every time
    assert [h.get("empty_layer", False) for h in history] == [True, False, False]
    assert {h["created"] for h in history} == {"1970-01-01T00:00:00Z"} and result.config["created"] == \
        "1970-01-01T00:00:00Z"
    assert result.config["config"]["Env"][-1] == "A=1" and result.config["config"]["WorkingDir"] == "/app"
    layers = list(result.image.layers())
    assert len(layers) == 2
    with tarfile.open(fileobj=layers[0].open_compressed(), mode="r:*") as tar:
        member = tar.getmember("a.txt")
        assert tar.extractfile(member).read() == b"A" and member.mtime == 0
    assert (result.root / "app").is_dir() and (result.root / "a.txt").read_text() == "A"
    assert os.listdir(tmp_path / "layers")  # the layers went where LayerWriting says
    builder.root.release()
