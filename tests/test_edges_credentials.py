"""Credential lookup at its edges (found by mutation testing of registry/credentials.py).

Rules: docker/cli cli/config (config.json location: $DOCKER_CONFIG, else $HOME/.docker; "auth" is
base64 "user:password" split on the first colon, NULs trimmed from the password as decodeAuth
does; Hub's key is https://index.docker.io/v1/), containers-auth.json(5) for the auth.json
fall-backs ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
$XDG_CONFIG_HOME/containers/auth.json), docker-credential-helpers' protocol for helpers.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from pathlib import Path

import pytest

from pybuildless.log import redact
from pybuildless.registry.credentials import (
    Credential,
    CredentialsError,
    DockerConfigKeychain,
    StaticKeychain,
    containers_auth_files,
    default_keychain,
    docker_config_dir,
    run_helper,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auths(path: Path, entries: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": entries}))
    return path


def helper(tmp_path: Path, monkeypatch, name: str, body: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_config_dir_from_docker_config_else_home(tmp_path):
    assert docker_config_dir({"DOCKER_CONFIG": "/x/conf", "HOME": "/h"}) == Path("/x/conf")
    assert docker_config_dir({"HOME": "/home/u"}) == Path("/home/u/.docker")
    auths(tmp_path / ".docker/config.json", {"home.example": {"auth": b64("homeuser:pw")}})
    assert default_keychain({"HOME": str(tmp_path)}).resolve("home.example").username == "homeuser"


def test_containers_auth_files_in_their_order(tmp_path):
    env = {"REGISTRY_AUTH_FILE": "/a/auth.json", "XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": "/cfg"}
    assert containers_auth_files(env) == [Path("/a/auth.json"), Path("/run/user/7/containers/auth.json"),
                                          Path("/cfg/containers/auth.json")]
    assert containers_auth_files({}) == []
    auths(tmp_path / "run/containers/auth.json", {"r.example": {"auth": b64("runtime:pw")},
                                                  "both.example": {"auth": b64("runtime:pw")}})
    auths(tmp_path / "cfg/containers/auth.json", {"c.example": {"auth": b64("config:pw")},
                                                  "both.example": {"auth": b64("config:pw")}})
    kc = default_keychain({"HOME": str(tmp_path / "nohome"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
                           "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert [kc.resolve(h).username for h in ("r.example", "c.example", "both.example")] == [
        "runtime", "config", "runtime"]


def fresh(label: str) -> str:
    """A secret no earlier test (nor an earlier run in this process) can have registered."""
    return f"{label}-{uuid.uuid4().hex}"


def test_auth_password_keeps_colons_and_loses_trailing_nuls():
    secret = fresh("pa:ssX")
    kc = DockerConfigKeychain({"auths": {"r.example": {"auth": b64(f"user:{secret}\x00\x00")}}}, "cfg")
    assert secret not in redact(f"the password {secret} here")  # registered when the config is read
    assert kc.resolve("r.example") == Credential("user", secret)
    kc = DockerConfigKeychain({"auths": {"r.example": {"auth": b64("user:endsX\x00")}}}, "cfg")
    assert kc.resolve("r.example").password == "endsX"


def test_auth_may_be_wrapped_across_lines():
    """Go's base64.StdEncoding (docker/cli decodeAuth) skips \\r and \\n in the input."""
    wrapped = b64("user:some-long-password")
    wrapped = wrapped[:8] + "\n" + wrapped[8:] + "\n"
    kc = DockerConfigKeychain({"auths": {"r.example": {"auth": wrapped}}}, "cfg")
    assert kc.resolve("r.example") == Credential("user", "some-long-password")


def test_process_environment_is_the_default(tmp_path, monkeypatch):
    auths(tmp_path / "conf/config.json", {"env.example": {"auth": b64("envuser:pw")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "conf"))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    assert docker_config_dir() == tmp_path / "conf"
    assert default_keychain().resolve("env.example").username == "envuser"


def test_hub_key_wins_over_other_spellings_of_docker_hub():
    kc = DockerConfigKeychain({"auths": {
        "docker.io": {"auth": b64("short:pw1")},
        "https://index.docker.io/v1/": {"auth": b64("hubkey:pw2")},
    }}, "cfg")
    assert kc.resolve("docker.io").username == "hubkey"
    assert kc.resolve("index.docker.io").username == "hubkey"
    other = DockerConfigKeychain({"auths": {"https://index.docker.io/v1/": {"auth": b64("hubkey:pw2")},
                                            "r.example": {"auth": b64("plain:pw3")}}}, "cfg")
    assert other.resolve("r.example").username == "plain"


def test_plain_username_password_and_tokens_are_used_and_registered():
    kc = DockerConfigKeychain({"auths": {
        "u.example": {"username": "only-user"},
        "p.example": {"password": "only-password-edge-1"},
        "t.example": {"identitytoken": "identity-token-edge-2", "registrytoken": "registry-token-edge-3"},
    }}, "cfg")
    assert kc.resolve("u.example") == Credential("only-user", "")
    assert kc.resolve("p.example") == Credential("", "only-password-edge-1")
    tokens = kc.resolve("t.example")
    assert (tokens.identity_token, tokens.registry_token) == ("identity-token-edge-2", "registry-token-edge-3")
    for secret in ("only-password-edge-1", "identity-token-edge-2", "registry-token-edge-3"):
        assert secret not in redact(f"x {secret} y")


def test_secrets_of_unused_entries_are_registered_when_the_config_is_read():
    secrets = [fresh(k) for k in ("auth", "password", "identity", "registry", "direct")]
    DockerConfigKeychain({"auths": {"a.example": {"auth": b64(f"u:{secrets[0]}"), "password": secrets[1]},
                                    "b.example": {"identitytoken": secrets[2], "registrytoken": secrets[3]}}}, "c")
    Credential(password=secrets[4])
    for secret in secrets:
        assert secret not in redact(f"x {secret} y")


def test_helper_secrets_are_registered(tmp_path, monkeypatch):
    secret = fresh("helper")
    helper(tmp_path, monkeypatch, "fresh", f'read url; echo "{{\\"Username\\": \\"u\\", \\"Secret\\": \\"{secret}\\"}}"\n')
    assert run_helper("fresh", "r.example").password == secret
    assert secret not in redact(f"x {secret} y")


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "cfg.json: expected a JSON object"),
    ('{"auths": ["r.example"]}', "cfg.json: 'auths' must be an object"),
    ('{"auths": {"r.example": {"auth": "' + b64("no-colon") + '"}}}',
     r"cfg.json: auths\[r.example\]: 'auth' must encode 'username:password'"),
    ('{"auths": {"r.example": {"auth": "abc"}}}', r"cfg.json: auths\[r.example\]: 'auth' is not valid base64"),
])
def test_config_errors_name_the_source(text, message):
    with pytest.raises(CredentialsError, match=f"^{message}$"):
        DockerConfigKeychain.from_text(text, "cfg.json").resolve("r.example")


def test_empty_or_missing_config_is_anonymous_and_keeps_its_source(tmp_path):
    for kc in (DockerConfigKeychain.from_text("  \n", "empty.json"),
               DockerConfigKeychain.from_file(tmp_path / "missing.json")):
        assert kc.config == {} and kc.resolve("r.example").anonymous
    assert DockerConfigKeychain.from_file(tmp_path / "missing.json").source == str(tmp_path / "missing.json")
    assert DockerConfigKeychain.from_text("  \n", "empty.json").source == "empty.json"
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()
    with pytest.raises(CredentialsError, match=rf"^{unreadable}: cannot read: Is a directory$"):
        DockerConfigKeychain.from_file(unreadable)


def test_docker_auth_config_errors_say_so():
    with pytest.raises(CredentialsError, match="^DOCKER_AUTH_CONFIG: expected a JSON object$"):
        default_keychain({"DOCKER_AUTH_CONFIG": "[]", "HOME": "/nonexistent"})


def test_where_credentials_came_from_is_logged_without_secrets(tmp_path, monkeypatch, caplog):
    helper(tmp_path, monkeypatch, "edge", 'read url; echo "{\\"Username\\": \\"hu\\", \\"Secret\\": \\"hs-edge-9\\"}"\n')
    kc = DockerConfigKeychain({"credHelpers": {"h.example": "edge"},
                               "auths": {"f.example": {"auth": b64("fu:fs-edge-10")}}}, "cfg.json")
    with caplog.at_level(logging.DEBUG, logger="pybuildless.registry.credentials"):
        kc.resolve("h.example")
        kc.resolve("f.example")
        kc.resolve("none.example")
    messages = [r.getMessage() for r in caplog.records if r.name == "pybuildless.registry.credentials"]
    assert messages == ["credentials for h.example from credential helper edge",
                        "credentials for f.example from cfg.json"]


def test_helper_answers(tmp_path, monkeypatch):
    helper(tmp_path, monkeypatch, "nouser", 'read url; echo "{\\"Secret\\": \\"s-edge-11\\"}"\n')
    assert run_helper("nouser", "r.example") == Credential("", "s-edge-11")
    helper(tmp_path, monkeypatch, "errnotfound", "echo 'Credentials not found in native keychain' >&2; exit 1\n")
    assert run_helper("errnotfound", "r.example").anonymous
    helper(tmp_path, monkeypatch, "garbage", "echo not-json\n")
    with pytest.raises(CredentialsError, match="^credential helper docker-credential-garbage printed invalid JSON$"):
        run_helper("garbage", "r.example")
    helper(tmp_path, monkeypatch, "slow", "sleep 30\n")
    with pytest.raises(CredentialsError, match="^credential helper docker-credential-slow timed out after 1s$"):
        run_helper("slow", "r.example", timeout=1)


def test_static_keychain_matches_normalised_hosts():
    cred = Credential("u", "static-edge-12")
    kc = StaticKeychain((("index.docker.io", cred),))
    assert kc.resolve("docker.io") is cred and kc.resolve("other.example").anonymous
