"""config.json, DOCKER_AUTH_CONFIG and credential helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from pybuildless.log import redact
from pybuildless.registry.credentials import (
    ANONYMOUS,
    Credential,
    CredentialsError,
    config_key_to_host,
    default_keychain,
)

PASSWORD = "pa:ss-Word-Credentials-1"  # contains ':' — split on the first colon only


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(tmp_path: Path, doc: dict) -> dict[str, str]:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(d), "HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}


@pytest.fixture
def helper_dir(tmp_path, monkeypatch) -> Path:
    """A ``docker-credential-test`` helper on PATH, answering from a JSON file of server URL → creds."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    store = tmp_path / "helper-store.json"
    store.write_text("{}")
    script = bindir / "docker-credential-test"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"store = json.load(open({str(store)!r}))\n"
        "assert sys.argv[1:] == ['get'], sys.argv\n"
        "url = sys.stdin.read().strip()\n"
        f"open({str(tmp_path / 'helper-asked')!r}, 'a').write(url + '\\n')\n"
        "if url not in store:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "json.dump(dict(store[url], ServerURL=url), sys.stdout)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def set_store(helper_dir: Path, store: dict) -> None:
    (helper_dir / "helper-store.json").write_text(json.dumps(store))


def asked(helper_dir: Path) -> list[str]:
    p = helper_dir / "helper-asked"
    return p.read_text().split() if p.exists() else []


def test_auth_field_is_split_on_the_first_colon(tmp_path):
    env = write_config(tmp_path, {"auths": {"reg.example:5000": {"auth": b64(f"alice:{PASSWORD}")}}})
    cred = default_keychain(env).resolve("reg.example:5000")
    assert (cred.username, cred.password) == ("alice", PASSWORD)
    assert default_keychain(env).resolve("other.example") == ANONYMOUS


def test_username_password_identity_and_registry_tokens(tmp_path):
    env = write_config(tmp_path, {"auths": {
        "a.example": {"username": "u", "password": "p-plain-1"},
        "b.example": {"identitytoken": "refresh-token-1"},
        "c.example": {"registrytoken": "bearer-token-1"},
    }})
    kc = default_keychain(env)
    assert kc.resolve("a.example") == Credential("u", "p-plain-1")
    assert kc.resolve("b.example").identity_token == "refresh-token-1"
    assert kc.resolve("c.example").registry_token == "bearer-token-1"


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "https://docker.io", "docker.io"])
@pytest.mark.parametrize("asked_for", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_keys_are_normalised(tmp_path, key, asked_for):
    env = write_config(tmp_path, {"auths": {key: {"auth": b64("hubuser:hubpass")}}})
    assert default_keychain(env).resolve(asked_for).username == "hubuser"


def test_key_with_scheme_and_path_matches_host(tmp_path):
    env = write_config(tmp_path, {"auths": {"https://reg.example:5000/v2/": {"auth": b64("x:y-long")}}})
    assert default_keychain(env).resolve("reg.example:5000").username == "x"
    assert config_key_to_host("http://Reg.Example/v1/") == "reg.example"


def test_exact_key_wins_over_normalised_one(tmp_path):
    env = write_config(tmp_path, {"auths": {
        "https://reg.example": {"auth": b64("normalised:p1234")},
        "reg.example": {"auth": b64("exact:p1234")},
    }})
    assert default_keychain(env).resolve("reg.example").username == "exact"


def test_docker_auth_config_env_comes_first(tmp_path):
    env = write_config(tmp_path, {"auths": {"r.example": {"auth": b64("fromfile:p1234")}}})
    env["DOCKER_AUTH_CONFIG"] = json.dumps({"auths": {"r.example": {"auth": b64("fromenv:p1234")}}})
    assert default_keychain(env).resolve("r.example").username == "fromenv"
    # a host only in the file still resolves through the chain
    env["DOCKER_AUTH_CONFIG"] = json.dumps({"auths": {}})
    assert default_keychain(env).resolve("r.example").username == "fromfile"


def test_missing_config_is_anonymous_and_bad_config_names_the_file(tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "nowhere"), "HOME": str(tmp_path)}
    assert default_keychain(env).resolve("x.example").anonymous
    d = tmp_path / "bad"
    d.mkdir()
    (d / "config.json").write_text('{"auths": {')
    with pytest.raises(CredentialsError, match=r"config\.json: invalid JSON at line 1"):
        default_keychain({"DOCKER_CONFIG": str(d)})
    env = write_config(tmp_path, {"auths": {"r.example": {"auth": "!!notbase64"}}})
    with pytest.raises(CredentialsError, match="base64|username:password"):
        default_keychain(env).resolve("r.example")


def test_cred_helpers_per_host_then_store_then_auths(tmp_path, helper_dir):
    set_store(helper_dir, {
        "helped.example": {"Username": "helper-user", "Secret": "helper-secret-1"},
        "https://index.docker.io/v1/": {"Username": "<token>", "Secret": "hub-identity-token"},
    })
    env = write_config(tmp_path, {
        "credHelpers": {"helped.example": "test"},
        "auths": {"plain.example": {"auth": b64("fileuser:p1234")}},
    })
    env["PATH"] = os.environ["PATH"]
    kc = default_keychain(env)
    assert kc.resolve("helped.example") == Credential("helper-user", "helper-secret-1")
    assert kc.resolve("plain.example").username == "fileuser"
    assert asked(helper_dir) == ["helped.example"]  # the helper is asked only for its own host

    env = write_config(tmp_path, {"credsStore": "test", "auths": {"plain.example": {"auth": b64("fileuser:p1234")}}})
    env["PATH"] = os.environ["PATH"]
    kc = default_keychain(env)
    hub = kc.resolve("docker.io")
    assert hub.identity_token == "hub-identity-token" and not hub.username  # "<token>" = identity token
    # not in the store: falls back to auths
    assert kc.resolve("plain.example").username == "fileuser"
    assert "https://index.docker.io/v1/" in asked(helper_dir)


def test_helper_with_empty_answer_is_anonymous(tmp_path, helper_dir):
    set_store(helper_dir, {"e.example": {"Username": "", "Secret": ""}})
    env = write_config(tmp_path, {"credHelpers": {"e.example": "test"}})
    env["PATH"] = os.environ["PATH"]
    assert default_keychain(env).resolve("e.example").anonymous


def test_missing_or_failing_helper_is_a_clear_error_without_its_output(tmp_path, helper_dir):
    env = write_config(tmp_path, {"credHelpers": {"x.example": "absent"}})
    with pytest.raises(CredentialsError, match="docker-credential-absent not found"):
        default_keychain(env).resolve("x.example")
    failing = helper_dir / "bin" / "docker-credential-fail"
    failing.write_text("#!/bin/sh\necho 'leaked-helper-secret' >&2\nexit 3\n")
    failing.chmod(0o755)
    env = write_config(tmp_path, {"credHelpers": {"x.example": "fail"}})
    with pytest.raises(CredentialsError) as info:
        default_keychain(env).resolve("x.example")
    assert "exit status 3" in str(info.value)
    assert "leaked-helper-secret" not in str(info.value)


def test_secrets_read_are_registered_for_redaction(tmp_path, helper_dir):
    set_store(helper_dir, {"s.example": {"Username": "u", "Secret": "helper-registered-secret"}})
    env = write_config(tmp_path, {
        "credHelpers": {"s.example": "test"},
        "auths": {"f.example": {"auth": b64("u:file-registered-secret")}},
    })
    env["PATH"] = os.environ["PATH"]
    kc = default_keychain(env)
    kc.resolve("s.example")
    assert "helper-registered-secret" not in redact("token helper-registered-secret here")
    assert "file-registered-secret" not in redact("x file-registered-secret y")
    assert "file-registered-secret" not in repr(kc.resolve("f.example"))


def test_containers_auth_json_is_a_fallback(tmp_path):
    env = write_config(tmp_path, {"auths": {"docker.example": {"auth": b64("dockeruser:p1234")}}})
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {
        "podman.example": {"auth": b64("podmanuser:p1234")},
        "docker.example": {"auth": b64("shadowed:p1234")},
    }}))
    env["REGISTRY_AUTH_FILE"] = str(auth_file)
    kc = default_keychain(env)
    assert kc.resolve("podman.example").username == "podmanuser"
    assert kc.resolve("docker.example").username == "dockeruser"  # Docker's config comes first
