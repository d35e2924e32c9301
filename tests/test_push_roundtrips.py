"""Every request of a warm build, counted at a proxy in front of the real registry (Debian's
docker-registry, distribution 2.8), against what the OCI distribution-spec requires.

The expected lists are built from the spec (opencontainers/distribution-spec, spec.md at
967efdc079b91785ad18c77cc4f8991a47feefbf), one entry per request a client cannot do without:

- ``GET /v2/`` once per registry: "Determining Support" (end-1); it also says which
  authentication the registry wants, so it is needed once, not per repository.
- the base by tag: one ``HEAD /v2/<name>/manifests/<tag>`` ("Checking if content exists",
  end-3: a 200 carries ``Docker-Content-Digest``); the manifest and config it names are kept
  by digest in the layer store, so no GET. By digest: nothing to ask at all.
- a base layer into another repository of the same registry: one
  ``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<base>`` ("Mounting a blob from
  another repository", end-11, answered 201); into the base's own repository: nothing.
- each new blob: an upload, "POST then PUT" (end-4a/4b then end-6). "Single POST" is a MAY,
  and distribution 2.8 answers it 202 without reading the bytes (checked below), so two
  requests. The existence check (HEAD, end-2) is optional and is not needed for a blob just
  built; the config goes into the upload the push-permission check opened (Kaniko's
  CheckPushPermissions starts one upload per destination), so the config costs one PUT.
- the manifest: one ``PUT /v2/<name>/manifests/<tag>`` ("Pushing Manifests", end-7a).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from pybuildless.image.descriptor import Digest
from tests.buildkit import executor, unpack, write_context
from tests.faultproxy import FaultProxy
from tests.fixtures.images import push_layout

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.url) as p:
        yield p


@pytest.fixture
def base(request, registry, busybox_layout, proxy):
    """The busybox image in a repository of this test's own, named through the proxy."""
    repo = "pushrt/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    push_layout(busybox_layout, registry, f"{repo}:latest")
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{registry.ref(repo)}:latest"],
                         capture_output=True, check=True, timeout=120).stdout
    return repo, json.loads(raw), Digest.of_bytes(raw)


def build(tmp_path: Path, name: str, dockerfile: str, *flags: str, cache: Path) -> str:
    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": dockerfile, "f": "file\n"})
    digest_file = tmp_path / f"digest-{name}"
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--digest-file", str(digest_file),
             *flags, cwd=tmp_path, env={"XDG_CACHE_HOME": str(cache), "SOURCE_DATE_EPOCH": "1700000000"})
    return digest_file.read_text()


def pushed(registry, repo_tag: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{registry.ref(repo_tag)}"],
                         capture_output=True, check=True, timeout=120).stdout
    return json.loads(out)


def shape(log: list[tuple[str, str, str]], names: dict[str, str]) -> Counter:
    """The requests as (method, path, status) with digests named and upload sessions as <session>."""
    out = Counter()
    for method, path, status in log:
        path = re.sub(r"/blobs/uploads/[0-9a-f-]{36}\?[^&]*", "/blobs/uploads/<session>?", path)
        path = path.replace("?&", "?").rstrip("?")
        for hexdigest, name in names.items():
            path = path.replace(f"sha256%3A{hexdigest}", f"<{name}>").replace(f"sha256:{hexdigest}", f"<{name}>")
        out[(method, path, status)] += 1
    return out


def test_single_post_upload_is_answered_202_by_this_registry(registry):
    """The fact the expected counts rest on: distribution 2.8 does not take "Single POST"
    (end-4b): it opens a session (202) and keeps nothing of the bytes sent with the POST."""
    data = b"single post probe\n"
    digest = Digest.of_bytes(data)
    req = urllib.request.Request(f"{registry.url}/v2/pushrt/probe/blobs/uploads/?digest={digest}", data=data,
                                 method="POST", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202 and resp.headers["Location"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(f"{registry.url}/v2/pushrt/probe/blobs/{digest}",
                                                      method="HEAD"), timeout=30)
    assert e.value.code == 404


def test_first_build_on_an_empty_store(tmp_path, proxy, registry, base):
    """Nothing kept yet: the base's manifest is fetched by tag at once (a HEAD could save
    nothing), its config and layer once each ("Pulling manifests", "Pulling blobs": end-3, end-2)."""
    repo, base_manifest, _ = base
    mark = len(proxy.log)
    build(tmp_path, "first", f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n", "-d", f"{proxy.host}/pushrt/first:1",
          cache=tmp_path / "cache")
    image = pushed(registry, "pushrt/first:1")
    names = {base_manifest["layers"][0]["digest"].split(":")[1]: "base-layer",
             base_manifest["config"]["digest"].split(":")[1]: "base-config",
             image["layers"][1]["digest"].split(":")[1]: "new-layer",
             image["config"]["digest"].split(":")[1]: "config"}
    dest = "/v2/pushrt/first"
    assert shape(proxy.log[mark:], names) == Counter({
        ("GET", "/v2/", "200"): 1,
        ("POST", f"{dest}/blobs/uploads/", "202"): 1,
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<config>", "201"): 1,
        ("GET", f"/v2/{repo}/manifests/latest", "200"): 1,
        ("GET", f"/v2/{repo}/blobs/<base-config>", "200"): 1,
        ("GET", f"/v2/{repo}/blobs/<base-layer>", "200"): 1,
        ("POST", f"{dest}/blobs/uploads/?mount=<base-layer>&from={repo}", "201"): 1,
        ("POST", f"{dest}/blobs/uploads/?digest=<new-layer>", "202"): 1,
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,
        ("PUT", f"{dest}/manifests/1", "201"): 1,
    })


def _warm_push(tmp_path, proxy, registry, base, dest_repo: str) -> tuple[Counter, dict, dict]:
    repo, base_manifest, _ = base
    dockerfile = f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n"
    cache = tmp_path / "cache"
    build(tmp_path, "cold", dockerfile, "-d", f"{proxy.host}/{dest_repo}:cold", cache=cache)
    mark = len(proxy.log)
    build(tmp_path, "warm", dockerfile, "-d", f"{proxy.host}/{dest_repo}:warm", cache=cache)
    image = pushed(registry, f"{dest_repo}:warm")
    names = {base_manifest["layers"][0]["digest"].split(":")[1]: "base-layer",
             image["layers"][1]["digest"].split(":")[1]: "new-layer",
             image["config"]["digest"].split(":")[1]: "config"}
    assert image["layers"][0]["digest"] == base_manifest["layers"][0]["digest"]
    return shape(proxy.log[mark:], names), image, base_manifest


def test_warm_build_pushed_to_another_repository_of_the_base_registry(tmp_path, proxy, registry, base):
    repo = base[0]
    got, _, _ = _warm_push(tmp_path, proxy, registry, base, "pushrt/other")
    dest = "/v2/pushrt/other"
    assert got == Counter({
        ("GET", "/v2/", "200"): 1,  # end-1, once for the registry
        ("POST", f"{dest}/blobs/uploads/", "202"): 1,  # the push-permission check's upload...
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<config>", "201"): 1,  # ...takes the config
        ("HEAD", f"/v2/{repo}/manifests/latest", "200"): 1,  # the base by tag; the rest is kept
        ("POST", f"{dest}/blobs/uploads/?mount=<base-layer>&from={repo}", "201"): 1,  # end-11
        ("POST", f"{dest}/blobs/uploads/?digest=<new-layer>", "202"): 1,  # end-4b, answered as 4a
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,  # end-6
        ("PUT", f"{dest}/manifests/warm", "201"): 1,  # end-7a
    })


def test_warm_build_pushed_to_the_base_repository(tmp_path, proxy, registry, base):
    repo = base[0]
    got, image, _ = _warm_push(tmp_path, proxy, registry, base, repo)
    dest = f"/v2/{repo}"
    assert got == Counter({
        ("GET", "/v2/", "200"): 1,
        ("POST", f"{dest}/blobs/uploads/", "202"): 1,
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<config>", "201"): 1,
        ("HEAD", f"{dest}/manifests/latest", "200"): 1,
        # the base layer is in this repository already: its manifest lists it, nothing to ask
        ("POST", f"{dest}/blobs/uploads/?digest=<new-layer>", "202"): 1,
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,
        ("PUT", f"{dest}/manifests/warm", "201"): 1,
    })
    rootfs = unpack(f"docker://{registry.ref(repo)}:warm", tmp_path / "u").rootfs
    assert (rootfs / "f").read_text() == "file\n" and (rootfs / "bin" / "busybox").exists()


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_copy_from_an_image_warm(tmp_path, proxy, registry, base, by):
    """``COPY --from=<image>``: the image's manifest and config come from the store like FROM's,
    its layer from the layer store: by tag one HEAD, by digest no request for it at all."""
    repo, base_manifest, top = base
    source = f"{proxy.host}/{repo}:latest" if by == "tag" else f"{proxy.host}/{repo}@{top}"
    dockerfile = f"FROM scratch\nCOPY --from={source} /bin/busybox /busybox\n"
    cache = tmp_path / "cache"
    build(tmp_path, "cold", dockerfile, "-d", f"{proxy.host}/pushrt/copy-{by}:cold", cache=cache)
    mark = len(proxy.log)
    build(tmp_path, "warm", dockerfile, "-d", f"{proxy.host}/pushrt/copy-{by}:warm", cache=cache)
    asked = [(m, p) for m, p, _ in proxy.log[mark:] if p.startswith(f"/v2/{repo}/")]
    assert asked == ([("HEAD", f"/v2/{repo}/manifests/latest")] if by == "tag" else [])
    layer = base_manifest["layers"][0]["digest"]
    assert not [p for _, p, _ in proxy.log[mark:] if layer.split(":")[1] in p]  # never downloaded again
    rootfs = unpack(f"docker://{registry.ref(f'pushrt/copy-{by}')}:warm", tmp_path / "u").rootfs
    assert (rootfs / "busybox").read_bytes()[:4] == b"\x7fELF"


def test_an_image_named_by_two_froms_and_a_copy_from_is_looked_up_once(tmp_path, proxy, registry, base):
    repo = base[0]
    image = f"{proxy.host}/{repo}:latest"
    dockerfile = (f"FROM {image} AS one\nCOPY f /one\n"
                  f"FROM {image}\nCOPY --from=one /one /from-one\nCOPY --from={image} /bin/busybox /bb\n")
    cache = tmp_path / "cache"
    build(tmp_path, "cold", dockerfile, "-d", f"{proxy.host}/pushrt/twice:cold", cache=cache)
    mark = len(proxy.log)
    build(tmp_path, "warm", dockerfile, "-d", f"{proxy.host}/pushrt/twice:warm", cache=cache)
    assert [(m, p) for m, p, _ in proxy.log[mark:] if p.startswith(f"/v2/{repo}/")] == [
        ("HEAD", f"/v2/{repo}/manifests/latest")]
    rootfs = unpack(f"docker://{registry.ref('pushrt/twice')}:warm", tmp_path / "u").rootfs
    assert (rootfs / "from-one").read_text() == "file\n" and (rootfs / "bb").exists()
