"""The test harness itself: each registry variant works with a real client (skopeo)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path

import jwt
import pytest

from tests.fixtures.images import push_layout
from tests.fixtures.registry import RegistryServer


def skopeo(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout)


def inspect(server: RegistryServer, path: str, creds: str | None) -> subprocess.CompletedProcess:
    args = ["inspect", "--tls-verify=false", "--raw"]
    if creds:
        args += ["--creds", creds]
    return skopeo(*args, f"docker://{server.ref(path)}")


def layout_manifest_digest(layout: Path) -> str:
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def test_busybox_layout_is_valid_oci(busybox_layout: Path) -> None:
    out = skopeo("inspect", f"oci:{busybox_layout}:latest")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["Os"] == "linux"
    assert len(info["Layers"]) == 1
    config = json.loads(skopeo("inspect", "--config", f"oci:{busybox_layout}:latest").stdout)
    assert config["config"]["Cmd"] == ["sh"]


def test_anonymous_push_and_inspect(registry: RegistryServer, busybox_layout: Path) -> None:
    assert registry.auth == "none" and registry.creds is None
    ref = push_layout(busybox_layout, registry, "harness/anon:v1")
    assert ref == f"{registry.host}/harness/anon:v1"
    out = inspect(registry, "harness/anon:v1", None)
    assert out.returncode == 0, out.stderr
    # The registry stores exactly the manifest bytes of the layout.
    raw = out.stdout.encode()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layout_manifest_digest(busybox_layout)
    assert any((registry.data_dir / "docker").rglob("*")), "registry wrote nothing to its data dir"


def test_basic_auth(registry_basic: RegistryServer, busybox_layout: Path) -> None:
    with pytest.raises(RuntimeError, match="(?i)unauthorized|authentication"):
        push_layout(busybox_layout, _without_creds(registry_basic), "harness/basic:v1")
    push_layout(busybox_layout, registry_basic, "harness/basic:v1")
    assert inspect(registry_basic, "harness/basic:v1", registry_basic.creds).returncode == 0
    assert inspect(registry_basic, "harness/basic:v1", None).returncode != 0
    wrong = inspect(registry_basic, "harness/basic:v1", f"{registry_basic.username}:wrong")
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower() or "authentication" in wrong.stderr.lower()
    # The ping without credentials is challenged with Basic.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(registry_basic.url + "/v2/", timeout=5)
    assert err.value.code == 401
    assert err.value.headers["WWW-Authenticate"].lower().startswith("basic")


def test_token_auth_end_to_end(registry_token: RegistryServer, busybox_layout: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(registry_token.url + "/v2/", timeout=5)
    assert err.value.code == 401
    challenge = err.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and registry_token.token_realm in challenge

    push_layout(busybox_layout, registry_token, "harness/token:v1")
    out = inspect(registry_token, "harness/token:v1", registry_token.creds)
    assert out.returncode == 0, out.stderr
    assert "sha256:" + hashlib.sha256(out.stdout.encode()).hexdigest() == layout_manifest_digest(
        busybox_layout
    )
    # Anonymous tokens carry no access: the registry refuses them.
    assert inspect(registry_token, "harness/token:v1", None).returncode != 0


def test_token_issuer_rejects_wrong_password_and_answers_anonymous(registry_token: RegistryServer) -> None:
    realm = registry_token.token_realm
    scope = "repository:harness/token:pull"
    wrong = urllib.request.Request(f"{realm}?service=x&scope={scope}")
    wrong.add_header("Authorization", "Basic " + base64.b64encode(b"tester:nope").decode())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(wrong, timeout=5)
    assert err.value.code == 401

    with urllib.request.urlopen(f"{realm}?service=x&scope={scope}", timeout=5) as resp:
        body = json.load(resp)
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == []

    good = urllib.request.Request(f"{realm}?service=x&scope={scope}&scope=repository:a/b:pull,push")
    creds = f"{registry_token.username}:{registry_token.password}".encode()
    good.add_header("Authorization", "Basic " + base64.b64encode(creds).decode())
    with urllib.request.urlopen(good, timeout=5) as resp:
        body = json.load(resp)
    assert body["token"] == body["access_token"] and body["expires_in"] > 0 and body["issued_at"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == [
        {"type": "repository", "name": "harness/token", "actions": ["pull"]},
        {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
    ]
    wrong_inspect = inspect(registry_token, "harness/token:v1", f"{registry_token.username}:nope")
    assert wrong_inspect.returncode != 0


def test_registry_factory_gives_private_registries(registry_factory, busybox_layout: Path) -> None:
    first = registry_factory()
    second = registry_factory("basic", username="alice", password="pw-alice")
    assert first.host != second.host and first.data_dir != second.data_dir
    assert second.creds == "alice:pw-alice"
    push_layout(busybox_layout, first, "private/one:v1")
    assert inspect(first, "private/one:v1", None).returncode == 0
    # The other registry never saw that repository.
    assert inspect(second, "private/one:v1", second.creds).returncode != 0


@pytest.mark.slow
@pytest.mark.root
def test_busybox_image_runs(busybox_image: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (umoci unpack and chroot)")
    layout = tmp_path / "oci"
    out = skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{busybox_image}", f"oci:{layout}:latest")
    assert out.returncode == 0, out.stderr
    bundle = tmp_path / "bundle"
    unpack = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], capture_output=True, text=True
    )
    assert unpack.returncode == 0, unpack.stderr
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin" / "sh").is_symlink()
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    run = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "echo hi; id -u user"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["hi", "1000"]


def _without_creds(server: RegistryServer) -> RegistryServer:
    return replace(server, username=None, password=None)


def _post(url: str, form: dict) -> tuple[int, dict]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_token_issuer_oauth2_post_and_refresh(registry_token: RegistryServer) -> None:
    realm = registry_token.token_realm
    status, body = _post(
        realm,
        {
            "grant_type": "password",
            "username": registry_token.username,
            "password": registry_token.password,
            "service": "svc",
            "scope": "repository:a/b:pull,push repository:c/d:pull",
            "access_type": "offline",
            "client_id": "pybuildless",
        },
    )
    assert status == 200 and body["refresh_token"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert [e["name"] for e in claims["access"]] == ["a/b", "c/d"]
    status, again = _post(realm, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "service": "svc", "scope": "repository:e/f:pull"})
    assert status == 200
    assert jwt.decode(again["token"], options={"verify_signature": False})["access"][0]["name"] == "e/f"
    assert _post(realm, {"grant_type": "refresh_token", "refresh_token": "bogus"})[0] == 401
    assert _post(realm, {"grant_type": "password", "username": "tester", "password": "no"})[0] == 401
    assert registry_token.token_issuer.requests[-1][0] == "POST"


def test_token_issuer_without_oauth_answers_404_to_post(registry_factory, busybox_layout: Path) -> None:
    server = registry_factory("token", token_post=False)
    assert _post(server.token_realm, {"grant_type": "password"})[0] == 404
    # skopeo uses GET, so the registry still works
    push_layout(busybox_layout, server, "nopost/img:v1")
    methods_scopes = [(r[0], r[2]) for r in server.token_issuer.requests]
    assert ("GET", ("repository:nopost/img:pull,push",)) in methods_scopes
