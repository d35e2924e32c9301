"""Registry round trips of builds on the layer store, counted at a proxy in front of the real registry.

A base already in the store costs one manifest request by tag (a HEAD) and none by digest;
its layers are never downloaded again, and a push to a repository of the same registry mounts
them (``?mount=&from=``, no HEAD first) or, to the base's own repository, skips them. Counts
come from the requests the registry was actually sent (``tests.faultproxy`` logs each one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from pybuildless.image.descriptor import Digest
from pybuildless.store.layers import LayerStore
from tests.buildkit import executor, unpack, write_context
from tests.faultproxy import FaultProxy
from tests.fixtures.foreign import AMD64, ARM64, arm64_layout, arm64_rootfs, multiarch_image  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.url) as p:
        yield p


def skopeo_json(*args: str) -> dict:
    out = subprocess.run(["skopeo", *args], capture_output=True, check=True, timeout=120).stdout
    return json.loads(out)


def build(tmp_path: Path, name: str, dockerfile: str, *flags: str, cache: Path) -> str:
    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": dockerfile, "f": "file\n"})
    digest_file = tmp_path / f"digest-{name}"
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--digest-file", str(digest_file),
             "-v", "debug", *flags, cwd=tmp_path,
             env={"XDG_CACHE_HOME": str(cache), "SOURCE_DATE_EPOCH": "1700000000"})
    return digest_file.read_text()


def requests(proxy: FaultProxy, start: int, pattern: str, method: str | None = None) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in proxy.log[start:] if re.search(pattern, p) and (method is None or m == method)]


def test_a_stored_base_costs_one_head_and_its_layer_is_mounted_not_moved(tmp_path, proxy, busybox_image):
    repo = busybox_image.split("/", 1)[1].split(":")[0]  # base/busybox
    base = f"{proxy.host}/{repo}:latest"
    manifest = skopeo_json("inspect", "--tls-verify=false", "--raw", f"docker://{busybox_image}")
    layer, config = manifest["layers"][0]["digest"], manifest["config"]["digest"]
    dockerfile = f"FROM {base}\nRUN echo hi > /hi\n"
    cache = tmp_path / "cache"

    # cold: the manifest and config are read once, the layer streamed once into the store
    mark = len(proxy.log)
    cold = build(tmp_path, "cold", dockerfile, "-d", f"{proxy.host}/rt/cold:1", cache=cache)
    assert len(requests(proxy, mark, f"/v2/{repo}/blobs/{layer}$", "GET")) == 1
    assert len(requests(proxy, mark, f"/v2/{repo}/blobs/{config}$", "GET")) == 1
    assert len(list(LayerStore(cache / "pybuildless").entries())) == 1

    # warm, by tag: one HEAD for the tag; nothing else asked of the base's repository
    mark = len(proxy.log)
    warm = build(tmp_path, "warm", dockerfile, "-d", f"{proxy.host}/rt/warm:1", cache=cache)
    assert requests(proxy, mark, f"/v2/{repo}/") == [("HEAD", f"/v2/{repo}/manifests/latest")]
    # the layer went to the new repository by one cross-repository mount: no HEAD, no download, no upload
    assert requests(proxy, mark, layer.split(":")[1]) == [
        ("POST", f"/v2/rt/warm/blobs/uploads/?mount={layer.replace(':', '%3A')}&from={repo}")]
    assert warm == cold  # the same image either way (fixed SOURCE_DATE_EPOCH)

    # warm, by digest: no request at all for the base
    top = Digest.of_bytes(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                          f"docker://{busybox_image}"], capture_output=True, check=True).stdout)
    mark = len(proxy.log)
    build(tmp_path, "pinned", f"FROM {proxy.host}/{repo}@{top}\nRUN echo hi > /hi\n",
          "-d", f"{proxy.host}/rt/pinned:1", cache=cache)
    assert requests(proxy, mark, f"/v2/{repo}/") == []

    # pushed to the base's own repository: its layer is known to be there, not even a HEAD
    mark = len(proxy.log)
    build(tmp_path, "same", dockerfile, "-d", f"{proxy.host}/{repo}:derived", cache=cache)
    assert requests(proxy, mark, layer.split(":")[1]) == []
    assert requests(proxy, mark, f"/v2/{repo}/manifests/derived$", "PUT")
    image = unpack(f"docker://{busybox_image.rsplit(':', 1)[0]}:derived", tmp_path / "u")
    assert (image.rootfs / "hi").read_text() == "hi\n" and (image.rootfs / "bin" / "busybox").exists()


def test_one_multi_platform_base_stored_per_platform(tmp_path, registry, proxy, multiarch_image):
    """The same index reference, built for linux/amd64 then linux/arm64 on one store: each build
    gets its own platform's manifest, config and layer; the index is fetched once and kept."""
    repo = multiarch_image.split("/", 1)[1].split(":")[0]
    base = f"{proxy.host}/{repo}:latest"
    index = skopeo_json("inspect", "--tls-verify=false", "--raw", f"docker://{multiarch_image}")
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    diff_ids = {}
    for arch, digest in by_arch.items():
        config = skopeo_json("inspect", "--tls-verify=false", "--config",
                             f"docker://{multiarch_image.rsplit(':', 1)[0]}@{digest}")
        assert config["architecture"] == arch
        diff_ids[arch] = config["rootfs"]["diff_ids"]
    assert diff_ids["amd64"] != diff_ids["arm64"]  # the content differs: two store entries
    cache = tmp_path / "cache"
    dockerfile = f"FROM {base}\nCOPY f /f\n"
    built = {}
    for platform in (AMD64, ARM64, AMD64, ARM64):
        arch = platform.architecture
        mark = len(proxy.log)
        built.setdefault(arch, []).append(build(tmp_path, f"{arch}{len(built.get(arch, []))}", dockerfile,
                                                "--custom-platform", str(platform),
                                                "-d", registry.ref(f"rt/multi-{arch}:1"), cache=cache))
        if len(built[arch]) == 2:  # built before: one HEAD for the tag, the rest from the store
            assert requests(proxy, mark, f"/v2/{repo}/") == [("HEAD", f"/v2/{repo}/manifests/latest")]
    store = LayerStore(cache / "pybuildless")
    assert {str(e.diff_id) for e in store.entries()} == set(diff_ids["amd64"]) | set(diff_ids["arm64"])
    for arch in ("amd64", "arm64"):
        assert built[arch][0] == built[arch][1]
        pushed = skopeo_json("inspect", "--tls-verify=false", "--config", f"docker://{registry.ref(f'rt/multi-{arch}:1')}")
        assert pushed["architecture"] == arch
        assert pushed["rootfs"]["diff_ids"][:-1] == diff_ids[arch]


def test_pushed_to_another_registry_a_stored_base_layer_is_streamed_from_its_own(tmp_path, proxy, busybox_image,
                                                                                registry_factory):
    """The other registry lacks the layer: it is read once from the base's registry (not kept on
    disk by the build) and uploaded after a HEAD; the second push finds it there and moves nothing."""
    server = registry_factory()
    other = FaultProxy(server.url)
    with other:
        repo = busybox_image.split("/", 1)[1].split(":")[0]
        base = f"{proxy.host}/{repo}:latest"
        layer = skopeo_json("inspect", "--tls-verify=false", "--raw", f"docker://{busybox_image}")["layers"][0]["digest"]
        cache = tmp_path / "cache"
        dockerfile = f"FROM {base}\nRUN echo hi > /hi\n"
        build(tmp_path, "fill", dockerfile, "--no-push", cache=cache)  # the store has the layer now
        mark = len(proxy.log)
        first = build(tmp_path, "other1", dockerfile, "-d", f"{other.host}/elsewhere/app:1", cache=cache)
        assert requests(proxy, mark, layer.split(":")[1]) == [("GET", f"/v2/{repo}/blobs/{layer}")]
        uploads = [m for m, p, _ in other.log if layer.split(":")[1] in p]
        assert uploads[0] == "HEAD" and "PUT" in uploads
        mark, other_mark = len(proxy.log), len(other.log)
        second = build(tmp_path, "other2", dockerfile, "-d", f"{other.host}/elsewhere/app:2", cache=cache)
        assert second == first
        assert requests(proxy, mark, layer.split(":")[1]) == []
        assert [m for m, p, _ in other.log[other_mark:] if layer.split(":")[1] in p] == ["HEAD"]
        image = unpack(f"docker://{server.ref('elsewhere/app:2')}", tmp_path / "u")
        assert (image.rootfs / "hi").read_text() == "hi\n" and (image.rootfs / "bin" / "busybox").exists()


def test_cache_dir_holds_the_store(tmp_path, busybox_image):
    xdg, cache_dir = tmp_path / "xdg", tmp_path / "cache-dir"
    build(tmp_path, "cd", f"FROM {busybox_image}\nRUN true\n", "--no-push", "--cache-dir", str(cache_dir), cache=xdg)
    diff_id = skopeo_json("inspect", "--tls-verify=false", "--config", f"docker://{busybox_image}")["rootfs"]["diff_ids"]
    assert [str(e.diff_id) for e in LayerStore(cache_dir).entries()] == diff_id
    assert not (xdg / "pybuildless" / "layers").exists()
