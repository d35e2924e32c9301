"""Pull and push against real registries (anonymous, basic, token), cross-checked with skopeo and umoci."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from pathlib import Path

import pytest

from pybuildless.errors import AuthError, NotFoundError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Digest, Platform
from pybuildless.image.model import FileLayer, MountableLayer, canonical_json
from pybuildless.image.platform import NoMatchingPlatformError
from pybuildless.registry.client import RegistryClient
from pybuildless.registry.credentials import Credential, StaticKeychain, default_keychain
from pybuildless.registry.options import RegistryOptions
from pybuildless.name import parse_reference
from pybuildless.registry.remote import RemoteLayer, fetch_image, image_exists, pull_image, push_image

pytestmark = pytest.mark.slow


def skopeo_inspect(ref: str, server=None, raw: bool = False) -> dict:
    cmd = ["skopeo", "inspect", "--tls-verify=false"]
    if server is not None and server.creds:
        cmd += ["--creds", server.creds]
    if raw:
        cmd.append("--raw")
    out = subprocess.run(cmd + [f"docker://{ref}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def skopeo_unpack(ref: str, server, tmp_path: Path) -> Path:
    """skopeo copy to an OCI layout, then umoci unpack: both must accept what we pushed."""
    layout = tmp_path / "skopeo-layout"
    cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    if server.creds:
        cmd += ["--src-creds", server.creds]
    out = subprocess.run(cmd + [f"docker://{ref}", f"oci:{layout}:t"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    bundle = tmp_path / "bundle"
    out = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:t", str(bundle)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return bundle / "rootfs"


def layer_digests(ref: str, server=None) -> list[str]:
    return [layer["digest"] for layer in skopeo_inspect(ref, server, raw=True)["layers"]]


@pytest.fixture
def config_for(tmp_path, monkeypatch):
    """Point DOCKER_CONFIG at a config.json holding each server's credentials."""

    def make(*servers) -> RegistryOptions:
        auths = {s.host: {"auth": base64.b64encode(f"{s.username}:{s.password}".encode()).decode()}
                 for s in servers}
        d = tmp_path / "docker-config"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({"auths": auths}))
        monkeypatch.setenv("DOCKER_CONFIG", str(d))
        return RegistryOptions(keychain=default_keychain())

    return make


@pytest.fixture
def propagate_logs():
    logger = logging.getLogger("pybuildless")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old


def test_fetch_gives_verified_mountable_layers(busybox_image, busybox_layout):
    image = fetch_image(busybox_image)
    [layer] = image.layers()
    assert isinstance(layer, MountableLayer) and isinstance(layer, RemoteLayer)
    assert layer.source == parse_reference(busybox_image)
    oracle = json.loads((busybox_layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((busybox_layout / "blobs" / "sha256" / oracle["digest"].split(":")[1]).read_bytes())
    assert str(layer.digest) == manifest["layers"][0]["digest"]
    with layer.open_compressed() as f:
        data = f.read()
    assert Digest.of_bytes(data) == layer.digest and len(data) == layer.size
    assert json.loads(image.raw_config())["rootfs"]["diff_ids"] == [str(layer.diff_id)]


def test_pull_to_disk_then_push_elsewhere(busybox_image, registry, tmp_path):
    pulled = pull_image(busybox_image, tmp_path / "blobs")
    [layer] = pulled.layers()
    assert isinstance(layer, FileLayer) and layer.path.stat().st_size == layer.size
    assert isinstance(layer, MountableLayer) and layer.source == parse_reference(busybox_image)
    # a second pull reuses the verified file instead of downloading it again
    mtime = layer.path.stat().st_mtime_ns
    again = pull_image(busybox_image, tmp_path / "blobs")
    assert again.layers()[0].path.stat().st_mtime_ns == mtime

    dest = registry.ref("roundtrip/copied:v1")
    digest = push_image(pulled, [dest])
    assert digest == Digest.of_bytes(pulled.raw_manifest())
    assert layer_digests(dest) == [str(layer.digest)]
    assert skopeo_inspect(dest)["Digest"] == str(digest)
    rootfs = skopeo_unpack(dest, registry, tmp_path)
    assert (rootfs / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()


def test_remote_image_is_mounted_within_a_registry(busybox_image, registry, propagate_logs, caplog):
    image = fetch_image(busybox_image)
    caplog.set_level(logging.INFO, logger="pybuildless")
    dests = [registry.ref("mount/a:1"), registry.ref("mount/b:2")]
    digest = push_image(image, dests)
    assert digest == image.digest
    text = caplog.text
    assert text.count(": mounted") == 2 and ": uploaded" not in text
    for d in dests:
        assert layer_digests(d) == [str(l.digest) for l in image.layers()]


@pytest.mark.parametrize("which", ["registry_basic", "registry_token"])
def test_push_and_pull_with_auth_and_check_with_skopeo_and_umoci(which, request, busybox_image, config_for,
                                                                  tmp_path):
    server = request.getfixturevalue(which)
    options = config_for(server)
    source = fetch_image(busybox_image)
    dests = [server.ref(f"auth-{which}/first:v1"), server.ref(f"auth-{which}/second:v2")]
    digest = push_image(source, dests, options=options)
    for d in dests:
        assert layer_digests(d, server) == [str(l.digest) for l in source.layers()]
        assert skopeo_inspect(d, server)["Digest"] == str(digest)
    back = fetch_image(dests[1], options=options)
    assert back.digest == digest and back.raw_config() == source.raw_config()
    rootfs = skopeo_unpack(dests[0], server, tmp_path)
    assert (rootfs / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size


@pytest.mark.parametrize("which", ["registry_basic", "registry_token"])
def test_missing_or_wrong_credentials_are_auth_errors(which, request, busybox_image):
    server = request.getfixturevalue(which)
    source = fetch_image(busybox_image)
    anonymous = RegistryOptions(keychain=StaticKeychain(()))
    with pytest.raises(AuthError):
        push_image(source, [server.ref("denied/x:1")], options=anonymous)
    wrong = RegistryOptions(keychain=StaticKeychain(((server.host, Credential(server.username, "wrong-pw-123")),)))
    with pytest.raises(AuthError) as info:
        push_image(source, [server.ref("denied/x:1")], options=wrong)
    assert "wrong-pw-123" not in str(info.value)


def test_pull_by_digest_and_missing_images(busybox_image, registry):
    image = fetch_image(busybox_image)
    by_digest = parse_reference(busybox_image).with_digest(str(image.digest))
    assert fetch_image(by_digest).digest == image.digest
    assert image_exists(by_digest).digest == image.digest
    assert image_exists(registry.ref("nope/nothing:1")) is None
    with pytest.raises(NotFoundError) as info:
        fetch_image(registry.ref("nope/nothing:1"))
    assert "MANIFEST_UNKNOWN" in str(info.value) or "NAME_UNKNOWN" in str(info.value)
    wrong = parse_reference(busybox_image).with_digest("sha256:" + "0" * 64)
    with pytest.raises(NotFoundError):
        fetch_image(wrong)


def test_platform_selection_from_an_index_skips_attestations(busybox_image, registry):
    image = fetch_image(busybox_image)
    repo = parse_reference(registry.ref("multi/arch:idx"))
    push_image(image, [repo.with_tag("single")])
    client = RegistryClient.for_reference(repo)
    entry = {"mediaType": image.media_type, "digest": str(image.digest), "size": len(image.raw_manifest())}
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            # an attestation-looking entry first: must never be picked
            {**entry, "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            {**entry, "platform": {"os": "linux", "architecture": "arm64"}},
            {**entry, "platform": Platform.host().to_dict()},
        ],
    }
    raw_index = canonical_json(index)
    index_digest = client.put_manifest(repo, raw_index, mt.OCI_INDEX, scopes=(repo.scope("push,pull"),))
    got = fetch_image(repo, platform=Platform.host())
    assert got.digest == image.digest and got.index_digest == index_digest
    assert fetch_image(repo, platform=Platform.parse("linux/arm64")).digest == image.digest
    with pytest.raises(NoMatchingPlatformError, match="s390x"):
        fetch_image(repo, platform=Platform.parse("linux/s390x"))


def _random_layer(tmp_path: Path, n: int) -> FileLayer:
    import gzip
    import io
    import os
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = os.urandom(200_000 + n)
        info = tarfile.TarInfo(f"file{n}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    compressed = gzip.compress(tar_bytes, mtime=0)
    path = tmp_path / f"layer{n}.tar.gz"
    path.write_bytes(compressed)
    return FileLayer(path, Digest.of_bytes(compressed), Digest.of_bytes(tar_bytes), len(compressed))


def test_multi_layer_image_pushes_and_pulls_in_parallel(registry, tmp_path):
    from pybuildless.image.model import build_image

    layers = [_random_layer(tmp_path, n) for n in range(5)]
    image = build_image({"architecture": Platform.host().architecture, "os": "linux", "config": {}}, layers)
    dest = registry.ref("parallel/five:v1")
    digest = push_image(image, [dest], jobs=4)
    assert layer_digests(dest) == [str(l.digest) for l in layers]
    pulled = pull_image(dest, tmp_path / "pulled", jobs=4)
    assert Digest.of_bytes(pulled.raw_manifest()) == digest
    for want, got in zip(layers, pulled.layers()):
        assert got.path.read_bytes() == want.path.read_bytes()


def test_push_index_of_two_platforms(registry, busybox_image, tmp_path):
    from pybuildless.image.model import build_image
    from pybuildless.registry.remote import push_index

    base = fetch_image(busybox_image)
    arm = build_image({"architecture": "arm64", "os": "linux", "config": {}}, [_random_layer(tmp_path, 9)])
    dest = registry.ref("multi/pushed:v1")
    index_digest = push_index([base, arm], [dest])
    raw = skopeo_inspect(dest, raw=True)
    assert raw["mediaType"] == mt.OCI_INDEX
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == [Platform.host().architecture, "arm64"]
    assert fetch_image(dest, platform=Platform.parse("linux/arm64")).digest == Digest.of_bytes(arm.raw_manifest())
    assert fetch_image(dest).index_digest == index_digest


def test_mirrors_and_registry_map_with_fallback(registry, busybox_image):
    source = fetch_image(busybox_image)
    # a Docker Hub name served by a mirror (Hub itself is never contacted: no fallback)
    push_image(source, [registry.ref("library/bbmirror:latest")])
    opts = RegistryOptions(registry_mirrors=(registry.host,), skip_default_registry_fallback=True)
    via_mirror = fetch_image("bbmirror", options=opts)
    assert via_mirror.digest == source.digest and via_mirror.source.registry == registry.host
    assert via_mirror.layers()[0].source.context == f"{registry.host}/library/bbmirror"
    # --registry-map with a path prefix
    push_image(source, [registry.ref("prefix/base/app:1")])
    opts = RegistryOptions(registry_map=(("origin.invalid", f"{registry.host}/prefix"),),
                           skip_default_registry_fallback=True)
    assert fetch_image("origin.invalid/base/app:1", options=opts).digest == source.digest
    # a mirror that is down: fall back to the original
    opts = RegistryOptions(registry_map=((registry.host, "127.0.0.1:1"),), retries=0)
    back = fetch_image(busybox_image, options=opts)
    assert back.digest == source.digest and back.source.registry == registry.host


def test_nested_indexes_are_followed(registry, busybox_image):
    image = fetch_image(busybox_image)
    repo = parse_reference(registry.ref("multi/nested:outer"))
    push_image(image, [repo.with_tag("leaf")])
    client = RegistryClient.for_reference(repo)
    inner = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": image.media_type, "digest": str(image.digest), "size": len(image.raw_manifest()),
         "platform": Platform.host().to_dict()}]})
    inner_digest = client.put_manifest(repo.with_tag("inner"), inner, mt.OCI_INDEX)
    outer = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_INDEX, "digest": str(inner_digest), "size": len(inner),
         "platform": Platform.host().to_dict()}]})
    outer_digest = client.put_manifest(repo, outer, mt.OCI_INDEX)
    got = fetch_image(repo)
    assert got.digest == image.digest and got.index_digest == outer_digest
    assert got.digest_reference.name == f"{repo.context}@{image.digest}"
