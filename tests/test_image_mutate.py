"""Pure image mutations keep unknown keys and stay internally consistent."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from pybuildless.errors import ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.layout import read_layout, write_layout
from pybuildless.image.model import image_config, image_digest, image_manifest
from pybuildless.image.mutate import append_layers, set_created, with_config
from pybuildless.image.validate import validate_image
from tests.fixtures.images import make_image, make_layer


def test_append_layers_keeps_base_and_unknown_keys(tmp_path: Path) -> None:
    base = make_image(tmp_path, [{"a": b"1"}])
    layer = make_layer(tmp_path, {"b": b"2"})
    history = [{"created_by": "ENV X=1", "empty_layer": True}, {"created_by": "COPY b /"}]
    new = append_layers(base, [layer], history)
    validate_image(new, decompress=True)
    config = image_config(new)
    assert config["x-unknown-key"] == {"kept": True}
    assert config["rootfs"]["diff_ids"] == image_config(base)["rootfs"]["diff_ids"] + [str(layer.diff_id)]
    assert config["history"][-2:] == history
    assert [str(x.digest) for x in new.layers()] == [str(base.layers()[0].digest), str(layer.digest)]
    # the original is untouched
    assert len(image_config(base)["rootfs"]["diff_ids"]) == 1
    with pytest.raises(ImageFormatError, match="1 layers but 2 non-empty"):
        append_layers(base, [layer], [{"created_by": "a"}, {"created_by": "b"}])


def test_append_layers_default_history_and_docker_types(tmp_path: Path) -> None:
    base = make_image(tmp_path, [{"a": b"1"}], docker=True)
    new = append_layers(base, [make_layer(tmp_path, {"c": b"3"})])
    validate_image(new)
    manifest = image_manifest(new)
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert [d["mediaType"] for d in manifest["layers"]] == [mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_GZIP]
    assert image_config(new)["history"][-1] == {"created": "2024-01-01T00:00:00Z"}
    # a zstd layer cannot live in a Docker manifest: the whole manifest becomes OCI
    zstd = append_layers(new, [make_layer(tmp_path, {"z": b"4"}, compression="zstd")])
    validate_image(zstd, decompress=True)
    manifest = image_manifest(zstd)
    assert manifest["mediaType"] == mt.OCI_MANIFEST and manifest["config"]["mediaType"] == mt.OCI_CONFIG
    assert [d["mediaType"] for d in manifest["layers"]] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD]


def test_base_layer_descriptor_fields_survive(tmp_path: Path) -> None:
    base = make_image(tmp_path, [{"a": b"1"}])
    raw = json.loads(base.raw_manifest())
    raw["layers"][0]["annotations"] = {"org.example": "yes"}
    raw["annotations"] = {"org.opencontainers.image.base.name": "busybox"}
    from pybuildless.image.model import ManifestImage, canonical_json

    annotated = ManifestImage(canonical_json(raw), base.raw_config(), base.layers())
    new = with_config(annotated, {"author": "me"})
    manifest = image_manifest(new)
    assert manifest["layers"][0]["annotations"] == {"org.example": "yes"}
    assert manifest["annotations"] == {"org.opencontainers.image.base.name": "busybox"}
    assert image_config(new)["author"] == "me"


def test_with_config_function_and_rootfs_guard(tmp_path: Path) -> None:
    base = make_image(tmp_path, [{"a": b"1"}])

    def add_label(config: dict) -> None:
        config.setdefault("config", {}).setdefault("Labels", {})["k"] = "v"

    new = with_config(base, add_label)
    assert image_config(new)["config"]["Labels"] == {"k": "v"}
    assert "Labels" not in image_config(base)["config"]
    assert image_digest(new) != image_digest(base)
    with pytest.raises(ImageFormatError, match="rootfs"):
        with_config(base, {"rootfs": {"type": "layers", "diff_ids": []}})


def test_set_created(tmp_path: Path) -> None:
    base = make_image(tmp_path, [{"a": b"1"}, {"b": b"2"}])
    when = dt.datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    new = set_created(base, when)
    assert image_config(new)["created"] == "2021-05-06T05:08:09Z"
    assert all("created" not in h for h in image_config(new)["history"])
    both = set_created(base, dt.datetime(1970, 1, 1), history=True)
    assert {h["created"] for h in image_config(both)["history"]} == {"1970-01-01T00:00:00Z"}
    # the same input gives the same image: reproducible
    assert image_digest(set_created(base, when)) == image_digest(new)


def test_mutated_busybox_runs_under_umoci(busybox_layout: Path, tmp_path: Path) -> None:
    base = read_layout(busybox_layout, "latest")
    layer = make_layer(tmp_path / "l", {"etc/motd": b"mutated\n"})
    new = with_config(append_layers(base, [layer], [{"created_by": "COPY motd /etc/"}]), lambda c: c["config"].update(Cmd=["cat", "/etc/motd"]))
    out = tmp_path / "out"
    write_layout(out, new, tag="m")
    r = subprocess.run(["umoci", "unpack", "--image", f"{out}:m", str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "rootfs" / "etc" / "motd").read_bytes() == b"mutated\n"
    runtime = json.loads((tmp_path / "b" / "config.json").read_text())
    assert runtime["process"]["args"] == ["cat", "/etc/motd"]
