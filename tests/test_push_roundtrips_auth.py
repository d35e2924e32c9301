"""Every request of a build behind a token-auth or basic-auth registry, with a layer cache
repository, and for several platforms: counted at a proxy in front of the real registry
(Debian's docker-registry, distribution 2.8) and at the token issuer, against what the specs
require. The anonymous warm/cold lists are in ``test_push_roundtrips.py``.

Sources of the expected lists:

- OCI distribution-spec, spec.md at 967efdc079b91785ad18c77cc4f8991a47feefbf (end-N numbers as
  there): ``GET /v2/`` once per registry (end-1); a tag resolved by one manifest request
  (end-3); mounts (end-11); "POST then PUT" uploads (end-4a, end-6); a manifest PUT (end-7a).
- distribution token spec, docs/spec/auth/token.md (distribution/distribution at
  5cb406d511b7b9163bff9b6439072e4892e5ae3b), "Requesting a Token": ``scope`` "can be specified
  multiple times" in one request, and the token is good for every resource it grants; so a
  build whose repositories are known up front needs one token exchange per credential, not one
  per scope set. distribution 2.8's token authorizer checks each request against the token's
  ``access`` list only (registry/auth/token/accesscontroller.go), so a token granting pull on
  the base and push,pull on the destination serves the FROM lookup, the mounts and the push.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.buildkit import executor, write_context
from tests.faultproxy import FaultProxy
from tests.fixtures.foreign import arm64_layout, arm64_rootfs, multiarch_image  # noqa: F401
from tests.fixtures.images import push_layout
from tests.test_push_roundtrips import shape

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def docker_config(tmp_path: Path, host: str, server) -> dict:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(d)}


def repo_for(request, prefix: str) -> str:
    return prefix + "/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]


def skopeo_raw(server, ref: str) -> bytes:
    cmd = ["skopeo", "inspect", "--tls-verify=false", "--raw"]
    if server.creds:
        cmd += ["--creds", server.creds]
    return subprocess.run(cmd + [f"docker://{server.ref(ref)}"], capture_output=True, check=True, timeout=120).stdout


def skopeo_copies(server, ref: str, dest: Path) -> None:
    """skopeo reads every blob of what was pushed (all platforms of an index): mounts and
    skipped uploads left nothing missing."""
    cmd = ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false"]
    if server.creds:
        cmd += ["--src-creds", server.creds]
    subprocess.run(cmd + [f"docker://{server.ref(ref)}", f"oci:{dest}:x"], capture_output=True, check=True,
                   timeout=120)


def build(tmp_path: Path, name: str, dockerfile: str, *flags: str, cache: Path, env: dict | None = None,
          check: bool = True, epoch: bool = True):
    ctx = write_context(tmp_path / f"ctx-{name}", {"Dockerfile": dockerfile, "f": "file\n"})
    # a layer cache entry made at SOURCE_DATE_EPOCH would be older than --cache-ttl: no epoch there
    env = {"XDG_CACHE_HOME": str(cache), **({"SOURCE_DATE_EPOCH": "1700000000"} if epoch else {}), **(env or {})}
    return executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), *flags, cwd=tmp_path, env=env,
                    check=check)


def digest_names(base_manifest: dict, image: dict) -> dict[str, str]:
    return {base_manifest["layers"][0]["digest"].split(":")[1]: "base-layer",
            base_manifest["config"]["digest"].split(":")[1]: "base-config",
            image["layers"][-1]["digest"].split(":")[1]: "new-layer",
            image["config"]["digest"].split(":")[1]: "config"}


def tokens(issuer, mark: int) -> list[tuple[str, tuple[str, ...]]]:
    """The token exchanges since ``mark`` as (method, sorted scopes)."""
    return [(method, tuple(sorted(scopes))) for method, _, scopes, _ in issuer.requests[mark:]]


@pytest.fixture
def token_proxy(registry_token):
    with FaultProxy(registry_token.url) as p:
        yield p


@pytest.fixture
def basic_proxy(registry_basic):
    with FaultProxy(registry_basic.url) as p:
        yield p


@pytest.fixture
def anon_proxy(registry):
    with FaultProxy(registry.url) as p:
        yield p


def expected_single(repo: str, dest: str, store: str, ping: str) -> Counter:
    """One FROM (by tag) and one COPY pushed to another repository of the base's registry."""
    want = Counter({
        ("GET", "/v2/", ping): 1,  # end-1, once for the registry
        ("POST", f"/v2/{dest}/blobs/uploads/", "202"): 1,  # the push-permission check's upload...
        ("PUT", f"/v2/{dest}/blobs/uploads/<session>?digest=<config>", "201"): 1,  # ...takes the config
        ("POST", f"/v2/{dest}/blobs/uploads/?mount=<base-layer>&from={repo}", "201"): 1,  # end-11
        ("POST", f"/v2/{dest}/blobs/uploads/?digest=<new-layer>", "202"): 1,  # end-4b, answered as 4a
        ("PUT", f"/v2/{dest}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,  # end-6
        ("PUT", f"/v2/{dest}/manifests/1", "201"): 1,  # end-7a
    })
    if store == "warm":  # manifest and config kept by digest in the layer store: one HEAD (end-3)
        want[("HEAD", f"/v2/{repo}/manifests/latest", "200")] = 1
    else:  # end-3 then end-2 for the config and the layer (unpacked into the store)
        want.update({("GET", f"/v2/{repo}/manifests/latest", "200"): 1,
                     ("GET", f"/v2/{repo}/blobs/<base-config>", "200"): 1,
                     ("GET", f"/v2/{repo}/blobs/<base-layer>", "200"): 1})
    return want


@pytest.mark.parametrize("store", ["cold", "warm"])
def test_token_auth_build(tmp_path, request, registry_token, token_proxy, busybox_layout, store):
    """Two token exchanges: the push-permission check's, for the destinations (the only
    repositories known before the Dockerfile is read), then at the FROM lookup one for the base
    with the destinations again, which serves the mount, the uploads and the manifest too."""
    proxy, issuer = token_proxy, registry_token.token_issuer
    repo = repo_for(request, "rtauth")
    push_layout(busybox_layout, registry_token, f"{repo}:latest")
    base_raw = skopeo_raw(registry_token, f"{repo}:latest")
    env = docker_config(tmp_path, proxy.host, registry_token)
    dockerfile = f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n"
    cache = tmp_path / "cache"
    if store == "warm":
        build(tmp_path, "first", dockerfile, "-d", f"{proxy.host}/{repo}-dest:first", cache=cache, env=env)
    mark, tmark = len(proxy.log), len(issuer.requests)
    build(tmp_path, "b", dockerfile, "-d", f"{proxy.host}/{repo}-dest:1", cache=cache, env=env)
    asked = tokens(issuer, tmark)
    image = json.loads(skopeo_raw(registry_token, f"{repo}-dest:1"))
    names = digest_names(json.loads(base_raw), image)
    assert shape(proxy.log[mark:], names) == expected_single(repo, f"{repo}-dest", store, "401")
    dest_scope, base_scope = f"repository:{repo}-dest:push,pull", f"repository:{repo}:pull"
    assert asked == [("GET", (dest_scope,)), ("GET", tuple(sorted((dest_scope, base_scope))))]


@pytest.mark.parametrize("store", ["cold", "warm"])
def test_basic_auth_build(tmp_path, request, registry_basic, basic_proxy, busybox_layout, store):
    """Basic credentials go with every request (the ping's 401 said so): no request more than
    an anonymous build's."""
    proxy = basic_proxy
    repo = repo_for(request, "rtauth")
    push_layout(busybox_layout, registry_basic, f"{repo}:latest")
    base_raw = skopeo_raw(registry_basic, f"{repo}:latest")
    env = docker_config(tmp_path, proxy.host, registry_basic)
    dockerfile = f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n"
    cache = tmp_path / "cache"
    if store == "warm":
        build(tmp_path, "first", dockerfile, "-d", f"{proxy.host}/{repo}-dest:first", cache=cache, env=env)
    mark = len(proxy.log)
    build(tmp_path, "b", dockerfile, "-d", f"{proxy.host}/{repo}-dest:1", cache=cache, env=env)
    image = json.loads(skopeo_raw(registry_basic, f"{repo}-dest:1"))
    names = digest_names(json.loads(base_raw), image)
    assert shape(proxy.log[mark:], names) == expected_single(repo, f"{repo}-dest", store, "401")


@pytest.mark.parametrize("store", ["cold", "warm"])
def test_cache_repo_build(tmp_path, request, registry, anon_proxy, busybox_layout, store):
    """``--cache=true --cache-repo``: a miss pushes the entry (its layer, config and manifest) and
    the destination mounts the layer from the cache repository instead of uploading it again
    (end-11: one request, no bytes); a hit reads the entry's manifest and config (end-3, end-2:
    the config says when the entry was made, for --cache-ttl) and mounts its layer likewise."""
    proxy = anon_proxy
    repo = repo_for(request, "rtcache")
    push_layout(busybox_layout, registry, f"{repo}:latest")
    base_raw = skopeo_raw(registry, f"{repo}:latest")
    dockerfile = f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n"
    cache = tmp_path / "cache"
    flags = ("--cache=true", "--cache-repo", f"{proxy.host}/{repo}-cache")
    if store == "warm":
        build(tmp_path, "first", dockerfile, "-d", f"{proxy.host}/{repo}-dest:first", *flags, cache=cache, epoch=False)
    mark = len(proxy.log)
    build(tmp_path, "b", dockerfile, "-d", f"{proxy.host}/{repo}-dest:1", *flags, cache=cache, epoch=False)
    image = json.loads(skopeo_raw(registry, f"{repo}-dest:1"))
    names = digest_names(json.loads(base_raw), image)
    tags = [t for t in json.loads(subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.ref(repo + '-cache')}"],
        capture_output=True, check=True, timeout=120).stdout)["Tags"]]
    assert len(tags) == 1
    entry = json.loads(skopeo_raw(registry, f"{repo}-cache:{tags[0]}"))
    names[entry["config"]["digest"].split(":")[1]] = "entry-config"
    assert entry["layers"][0]["digest"] == image["layers"][-1]["digest"]
    skopeo_copies(registry, f"{repo}-dest:1", tmp_path / "copy")
    dest, cached, key = f"/v2/{repo}-dest", f"/v2/{repo}-cache", tags[0]
    want = Counter({
        ("GET", "/v2/", "200"): 1,
        ("POST", f"{dest}/blobs/uploads/", "202"): 1,
        ("PUT", f"{dest}/blobs/uploads/<session>?digest=<config>", "201"): 1,
        ("POST", f"{dest}/blobs/uploads/?mount=<base-layer>&from={repo}", "201"): 1,
        ("POST", f"{dest}/blobs/uploads/?mount=<new-layer>&from={repo}-cache", "201"): 1,
        ("PUT", f"{dest}/manifests/1", "201"): 1,
    })
    if store == "warm":
        want.update({("HEAD", f"/v2/{repo}/manifests/latest", "200"): 1,
                     ("GET", f"{cached}/manifests/{key}", "200"): 1,
                     ("GET", f"{cached}/blobs/<entry-config>", "200"): 1})
    else:
        want.update({("GET", f"/v2/{repo}/manifests/latest", "200"): 1,
                     ("GET", f"/v2/{repo}/blobs/<base-config>", "200"): 1,
                     ("GET", f"/v2/{repo}/blobs/<base-layer>", "200"): 1,
                     ("GET", f"{cached}/manifests/{key}", "404"): 1,
                     ("POST", f"{cached}/blobs/uploads/?digest=<new-layer>", "202"): 1,
                     ("PUT", f"{cached}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,
                     ("POST", f"{cached}/blobs/uploads/?digest=<entry-config>", "202"): 1,
                     ("PUT", f"{cached}/blobs/uploads/<session>?digest=<entry-config>", "201"): 1,
                     ("PUT", f"{cached}/manifests/{key}", "201"): 1})
    assert shape(proxy.log[mark:], names) == want


def _index_names(server, ref_repo: str, raw_index: bytes, prefix: str) -> tuple[dict[str, str], dict]:
    """Names for an index, its manifests, their configs and layers (``<prefix>-<arch>-...``)."""
    names: dict[str, str] = {}
    manifests = {}
    for entry in json.loads(raw_index)["manifests"]:
        arch = entry["platform"]["architecture"]
        names[entry["digest"].split(":")[1]] = f"{prefix}-{arch}"
        manifest = json.loads(skopeo_raw(server, f"{ref_repo}@{entry['digest']}"))
        manifests[arch] = manifest
        names[manifest["config"]["digest"].split(":")[1]] = f"{prefix}-{arch}-config"
        for n, layer in enumerate(manifest["layers"]):
            names.setdefault(layer["digest"].split(":")[1], f"{prefix}-{arch}-layer{n}")
    return names, manifests


@pytest.mark.parametrize("store", ["cold", "warm"])
def test_multi_platform_build(tmp_path, request, registry, anon_proxy, multiarch_image, store):
    """Two platforms from one base index: the tag is resolved once for both (end-3: one GET, or
    one HEAD with the store warm), each platform's manifest fetched by digest once when cold;
    the COPY layer, the same bytes for both platforms, is uploaded once and found there by
    the second platform's push; each platform manifest goes up by digest, then the index."""
    proxy = anon_proxy
    base_repo = multiarch_image.split("/", 1)[1].rsplit(":", 1)[0]
    base = multiarch_image.replace(registry.host, proxy.host)
    dest = repo_for(request, "rtmulti")
    dockerfile = f"FROM {base}\nCOPY f /f\n"
    cache = tmp_path / "cache"
    flags = ("--custom-platform", "linux/amd64,linux/arm64")
    if store == "warm":
        build(tmp_path, "first", dockerfile, "-d", f"{proxy.host}/{dest}:first", *flags, cache=cache)
    mark = len(proxy.log)
    build(tmp_path, "b", dockerfile, "-d", f"{proxy.host}/{dest}:1", *flags, cache=cache)
    base_names, _ = _index_names(registry, base_repo, skopeo_raw(registry, f"{base_repo}:latest"), "base")
    out_names, out = _index_names(registry, dest, skopeo_raw(registry, f"{dest}:1"), "out")
    assert out["amd64"]["layers"][-1] == out["arm64"]["layers"][-1]  # the shared COPY layer
    skopeo_copies(registry, f"{dest}:1", tmp_path / "copy")
    names = {**out_names, **base_names}
    names[out["amd64"]["layers"][-1]["digest"].split(":")[1]] = "new-layer"
    d, b = f"/v2/{dest}", f"/v2/{base_repo}"
    want = Counter({
        ("GET", "/v2/", "200"): 1,
        ("POST", f"{d}/blobs/uploads/", "202"): 2,  # the permission check's; arm64's config upload
        ("PUT", f"{d}/blobs/uploads/<session>?digest=<out-amd64-config>", "201"): 1,
        ("PUT", f"{d}/blobs/uploads/<session>?digest=<out-arm64-config>", "201"): 1,
        ("POST", f"{d}/blobs/uploads/?mount=<base-amd64-layer0>&from={base_repo}", "201"): 1,
        ("POST", f"{d}/blobs/uploads/?mount=<base-arm64-layer0>&from={base_repo}", "201"): 1,
        ("POST", f"{d}/blobs/uploads/?digest=<new-layer>", "202"): 1,  # once for both platforms
        ("PUT", f"{d}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,
        ("PUT", f"{d}/manifests/<out-amd64>", "201"): 1,
        ("PUT", f"{d}/manifests/<out-arm64>", "201"): 1,
        ("PUT", f"{d}/manifests/1", "201"): 1,
    })
    if store == "warm":
        want[("HEAD", f"{b}/manifests/latest", "200")] = 1
    else:
        want.update({(m, f"{b}/{what}", "200"): 1 for m, what in [
            ("GET", "manifests/latest"), ("GET", "manifests/<base-amd64>"), ("GET", "manifests/<base-arm64>"),
            ("GET", "blobs/<base-amd64-config>"), ("GET", "blobs/<base-arm64-config>"),
            ("GET", "blobs/<base-amd64-layer0>"), ("GET", "blobs/<base-arm64-layer0>")]})
    assert shape(proxy.log[mark:], names) == want


def test_token_auth_build_to_several_destinations(tmp_path, request, registry_token, token_proxy, busybox_layout):
    """``-d a:1 -d b:1 -d a:2``: the permission check asks one token for both repositories
    (token.md: ``scope`` repeated), the FROM lookup one more with the base; the second
    repository mounts the new layer from the first (end-11), the second tag of the first costs
    its manifest PUT alone (end-7a)."""
    proxy, issuer = token_proxy, registry_token.token_issuer
    repo = repo_for(request, "rtauth")
    push_layout(busybox_layout, registry_token, f"{repo}:latest")
    base_raw = skopeo_raw(registry_token, f"{repo}:latest")
    env = docker_config(tmp_path, proxy.host, registry_token)
    dockerfile = f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n"
    cache = tmp_path / "cache"
    build(tmp_path, "first", dockerfile, "-d", f"{proxy.host}/{repo}-a:first", cache=cache, env=env)
    mark, tmark = len(proxy.log), len(issuer.requests)
    build(tmp_path, "b", dockerfile, "-d", f"{proxy.host}/{repo}-a:1", "-d", f"{proxy.host}/{repo}-b:1",
          "-d", f"{proxy.host}/{repo}-a:2", cache=cache, env=env)
    asked = tokens(issuer, tmark)
    image = json.loads(skopeo_raw(registry_token, f"{repo}-b:1"))
    assert json.loads(skopeo_raw(registry_token, f"{repo}-a:2")) == json.loads(skopeo_raw(registry_token, f"{repo}-a:1"))
    names = digest_names(json.loads(base_raw), image)
    skopeo_copies(registry_token, f"{repo}-b:1", tmp_path / "copy")
    a, b = f"/v2/{repo}-a", f"/v2/{repo}-b"
    assert shape(proxy.log[mark:], names) == Counter({
        ("GET", "/v2/", "401"): 1,
        ("POST", f"{a}/blobs/uploads/", "202"): 1,
        ("POST", f"{b}/blobs/uploads/", "202"): 1,
        ("HEAD", f"/v2/{repo}/manifests/latest", "200"): 1,
        ("POST", f"{a}/blobs/uploads/?mount=<base-layer>&from={repo}", "201"): 1,
        ("POST", f"{b}/blobs/uploads/?mount=<base-layer>&from={repo}", "201"): 1,
        ("PUT", f"{a}/blobs/uploads/<session>?digest=<config>", "201"): 1,
        ("PUT", f"{b}/blobs/uploads/<session>?digest=<config>", "201"): 1,
        ("POST", f"{a}/blobs/uploads/?digest=<new-layer>", "202"): 1,
        ("PUT", f"{a}/blobs/uploads/<session>?digest=<new-layer>", "201"): 1,
        ("POST", f"{b}/blobs/uploads/?mount=<new-layer>&from={repo}-a", "201"): 1,
        ("PUT", f"{a}/manifests/1", "201"): 1,
        ("PUT", f"{b}/manifests/1", "201"): 1,
        ("PUT", f"{a}/manifests/2", "201"): 1,
    })
    dests = (f"repository:{repo}-a:push,pull", f"repository:{repo}-b:push,pull")
    assert asked == [("GET", dests), ("GET", tuple(sorted((*dests, f"repository:{repo}:pull"))))]


def test_base_image_cache_miss_costs_one_head(tmp_path, request, registry, anon_proxy, busybox_layout):
    """``--cache-dir`` holding other images (the warmer's layout) and the layer store holding
    the base: the base-image cache's look-up and the store's ask the same HEAD (end-3), once."""
    proxy = anon_proxy
    repo = repo_for(request, "rtcache")
    push_layout(busybox_layout, registry, f"{repo}:latest")
    warmed = tmp_path / "warmed"
    warmed.mkdir()
    (warmed / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (warmed / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    dockerfile = f"FROM {proxy.host}/{repo}:latest\nCOPY f /f\n"
    cache = tmp_path / "cache"
    flags = ("--cache=true", "--cache-repo", f"{proxy.host}/{repo}-cache", "--cache-dir", str(warmed))
    build(tmp_path, "first", dockerfile, "-d", f"{proxy.host}/{repo}-dest:first", *flags, cache=cache, epoch=False)
    mark = len(proxy.log)
    build(tmp_path, "b", dockerfile, "-d", f"{proxy.host}/{repo}-dest:1", *flags, cache=cache, epoch=False)
    assert [(m, p, o) for m, p, o in proxy.log[mark:] if p.startswith(f"/v2/{repo}/")] == [
        ("HEAD", f"/v2/{repo}/manifests/latest", "200")]
    skopeo_copies(registry, f"{repo}-dest:1", tmp_path / "copy")
