"""`pybuildless pull` / `pybuildless push` end to end, checked with skopeo and umoci."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pybuildless", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_pull_writes_a_layout_that_umoci_unpacks_and_push_copies_it(busybox_image, registry, tmp_path):
    layout = tmp_path / "layout"
    proc = cli("pull", busybox_image, str(layout))
    assert proc.returncode == 0, proc.stderr
    name, _, digest = proc.stdout.strip().partition("@")
    assert name == f"{busybox_image}" and digest.startswith("sha256:")
    index = json.loads((layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    bundle = tmp_path / "bundle"
    out = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest", str(bundle)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (bundle / "rootfs" / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()

    dest = registry.ref("cli/pushed:v9")
    proc = cli("push", str(layout), dest)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{registry.host}/cli/pushed@{digest}"
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{dest}"],
                         capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    src = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{busybox_image}"],
                         capture_output=True, text=True, timeout=60)
    assert [l["digest"] for l in json.loads(raw.stdout)["layers"]] == \
        [l["digest"] for l in json.loads(src.stdout)["layers"]]


def test_bad_input_gives_one_line_errors(busybox_image, registry, tmp_path):
    proc = cli("pull", "Not A Reference", str(tmp_path / "x"))
    assert proc.returncode == 1 and "invalid reference" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("pull", busybox_image, str(tmp_path / "x"), "--platform", "linux//")
    assert proc.returncode == 2 and "--platform" in proc.stderr
    # a single-platform image is used anyway, as Docker does, with a warning
    proc = cli("pull", busybox_image, str(tmp_path / "x"), "--platform", "linux/s390x")
    assert proc.returncode == 0 and "not the requested linux/s390x" in proc.stderr
    proc = cli("pull", registry.ref("cli/missing:v1"), str(tmp_path / "y"))
    assert proc.returncode == 1 and ("MANIFEST_UNKNOWN" in proc.stderr or "NAME_UNKNOWN" in proc.stderr)
    proc = cli("push", str(tmp_path), registry.ref("cli/x:1"))
    assert proc.returncode == 1 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("pull", busybox_image, str(tmp_path / "z"), "--registry-certificate", "nohost")
    assert proc.returncode == 2 and "--registry-certificate" in proc.stderr
