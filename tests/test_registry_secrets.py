"""Passwords and tokens from config.json never show up in logs (any verbosity or format),
exception texts, or the CLI's output; plus the log setup itself."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys

import pytest

from pybuildless import log
from pybuildless.errors import PybuildlessError, UsageError
from pybuildless.registry.credentials import DockerConfigKeychain, default_keychain
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, pull_image, push_image

VERBOSITIES = ("panic", "fatal", "error", "warn", "info", "debug", "trace")


@pytest.fixture(autouse=True)
def clean_logging():
    """These tests configure logging in-process; leave it as they found it."""
    yield
    log.reset_logging()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def docker_config(tmp_path, monkeypatch, registry_basic, registry_token):
    d = tmp_path / "docker-config"
    d.mkdir()
    auths = {s.host: {"auth": b64(f"{s.username}:{s.password}")} for s in (registry_basic, registry_token)}
    (d / "config.json").write_text(json.dumps({"auths": auths}))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


def secrets_of(*servers) -> list[str]:
    out = []
    for s in servers:
        out += [s.password, b64(f"{s.username}:{s.password}")]
    return out


@pytest.fixture
def issued_tokens(monkeypatch) -> list[str]:
    """Every bearer token the client obtains during the test."""
    import pybuildless.registry.tokens as tokens_module

    tokens: list[str] = []
    real = tokens_module.fetch_token

    def recording(*args, **kwargs):
        token = real(*args, **kwargs)
        tokens.append(token.value)
        return token

    monkeypatch.setattr(tokens_module, "fetch_token", recording)
    return tokens


@pytest.mark.slow
def test_no_secret_in_logs_or_errors_at_any_verbosity(docker_config, registry_basic, registry_token,
                                                      busybox_image, tmp_path, issued_tokens):
    source = fetch_image(busybox_image)
    captured: list[str] = []
    for n, verbosity in enumerate(VERBOSITIES):
        fmt = ("text", "color", "json")[n % 3]
        stream = io.StringIO()
        log.setup_logging(verbosity, fmt, timestamps=True, stream=stream)
        options = RegistryOptions(keychain=default_keychain())
        for server in (registry_basic, registry_token):
            dest = server.ref(f"secrets/{verbosity}:v1")
            push_image(source, [dest], options=options)
            pull_image(dest, tmp_path / f"pull-{verbosity}", options=options)
            # a failure path too: a wrong password, with the error text captured
            wrong = tmp_path / f"wrong-{verbosity}-{server.auth}.json"
            wrong.write_text(json.dumps({"auths": {server.host: {
                "auth": b64(f"{server.username}:{server.password}-wrong")}}}))
            with pytest.raises(PybuildlessError) as info:
                fetch_image(dest, options=RegistryOptions(keychain=DockerConfigKeychain.from_file(wrong)))
            captured.append(str(info.value))
            logging.getLogger("pybuildless.test").exception("failed: %s", info.value)
        captured.append(stream.getvalue())
    log.reset_logging()
    text = "\n".join(captured)
    assert "DEBU" in text or '"level": "debug"' in text  # debug output was produced and checked
    assert issued_tokens, "the token registry issued tokens"
    for secret in secrets_of(registry_basic, registry_token) + issued_tokens:
        assert secret not in text


@pytest.mark.slow
def test_cli_output_never_contains_the_password(docker_config, registry_basic, busybox_image, tmp_path):
    dest = registry_basic.ref("secrets/cli:v1")
    push_image(fetch_image(busybox_image), [dest], options=RegistryOptions(keychain=default_keychain()))
    env = dict(os.environ, DOCKER_CONFIG=str(docker_config))
    outputs = []
    for args in (
        ["pull", dest, str(tmp_path / "layout"), "-v", "trace"],
        ["push", str(tmp_path / "layout"), registry_basic.ref("secrets/cli-copy:v2"), "-v", "trace",
         "--log-format", "json"],
    ):
        proc = subprocess.run([sys.executable, "-m", "pybuildless", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    # and a failing one, with the wrong password in a config of its own
    bad = tmp_path / "bad-config"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"auths": {registry_basic.host: {
        "auth": b64(f"{registry_basic.username}:{registry_basic.password}X")}}}))
    proc = subprocess.run([sys.executable, "-m", "pybuildless", "pull", dest, str(tmp_path / "l2"), "-v", "trace"],
                          env=dict(env, DOCKER_CONFIG=str(bad)), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    text = "\n".join(outputs)
    assert "TRAC" in text or '"trace"' in text
    for secret in secrets_of(registry_basic) + [f"{registry_basic.password}X"]:
        assert secret not in text


def test_redacting_filter_scrubs_headers_registered_secrets_and_tracebacks():
    stream = io.StringIO()
    log.setup_logging("trace", "text", stream=stream)
    try:
        log.register_secret("hunter2-registered")
        logger = logging.getLogger("pybuildless.test.redact")
        logger.info("header Authorization: Bearer abc.def.ghi-jkl")
        logger.info("value %s in args", "hunter2-registered")
        logger.info("url https://u:pw-in-url@h/x?access_token=tok123&digest=sha256:1")
        logger.debug("Basic %s", b64("user:some-long-password-here"))
        logger.info("stray jwt eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0ZXN0ZXIifQ.c2lnbmF0dXJl in text")
        try:
            raise ValueError("boom hunter2-registered")
        except ValueError:
            logger.exception("failed")
        text = stream.getvalue()
    finally:
        log.reset_logging()
    for secret in ("abc.def.ghi-jkl", "hunter2-registered", "pw-in-url", "tok123", b64("user:some-long-password-here"),
                   "eyJzdWIiOiJ0ZXN0ZXIifQ"):
        assert secret not in text
    assert "digest=sha256:1" in text and "ValueError" in text and text.count("[REDACTED]") >= 6


def test_verbosity_levels_and_formats():
    stream = io.StringIO()
    log.setup_logging("warn", "json", stream=stream)
    try:
        logger = logging.getLogger("pybuildless.test.levels")
        logger.info("hidden")
        logger.warning("shown %d", 1)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert lines == [lines[0]] and lines[0]["level"] == "warn" and lines[0]["msg"] == "shown 1"
        stream2 = io.StringIO()
        log.setup_logging("trace", "text", timestamps=False, stream=stream2)
        logger.log(log.TRACE, "fine detail")
        assert stream2.getvalue().startswith("TRAC[test.levels] fine detail")
        assert not stream.getvalue().count("fine detail")  # the earlier handler was replaced
    finally:
        log.reset_logging()
    assert logging.getLogger("pybuildless").propagate and not [
        h for h in logging.getLogger("pybuildless").handlers if getattr(h, "_pybuildless", False)]
    with pytest.raises(UsageError, match="--verbosity"):
        log.setup_logging("loud")
    with pytest.raises(UsageError, match="--log-format"):
        log.setup_logging("info", "xml")


@pytest.mark.slow
def test_tokens_from_config_json_never_show(registry_token, busybox_image, tmp_path, issued_tokens):
    """identitytoken (OAuth2 refresh) and registrytoken entries: used, never printed."""
    import urllib.request

    basic = b64(f"{registry_token.username}:{registry_token.password}")
    req = urllib.request.Request(f"{registry_token.token_realm}?service=pybuildless-test-registry"
                                 "&offline_token=true&client_id=tests&scope=repository:secrets/tok:pull,push")
    req.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        issued = json.loads(resp.read())
    refresh, ready = issued["refresh_token"], issued["token"]

    config = tmp_path / "identity"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {registry_token.host: {"identitytoken": refresh}}}))
    env = dict(os.environ, DOCKER_CONFIG=str(config))
    push_image(fetch_image(busybox_image), [registry_token.ref("secrets/tok:v1")],
               options=RegistryOptions(keychain=DockerConfigKeychain.from_file(config / "config.json")))
    outputs = []
    for verbosity, fmt in (("trace", "text"), ("debug", "json")):
        proc = subprocess.run([sys.executable, "-m", "pybuildless", "pull", registry_token.ref("secrets/tok:v1"),
                               str(tmp_path / f"out-{verbosity}"), "-v", verbosity, "--log-format", fmt],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    # a ready registry token, and a failing run with a bogus refresh token
    (config / "config.json").write_text(json.dumps({"auths": {registry_token.host: {"registrytoken": ready}}}))
    proc = subprocess.run([sys.executable, "-m", "pybuildless", "pull", registry_token.ref("secrets/tok:v1"),
                           str(tmp_path / "out-ready"), "-v", "trace"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    (config / "config.json").write_text(json.dumps({"auths": {registry_token.host: {
        "identitytoken": refresh + "-revoked"}}}))
    proc = subprocess.run([sys.executable, "-m", "pybuildless", "pull", registry_token.ref("secrets/tok:v1"),
                           str(tmp_path / "out-bad"), "-v", "trace"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "error:" in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    text = "\n".join(outputs)
    assert "TRAC" in text
    for secret in [refresh, ready, *issued_tokens]:
        assert secret not in text
    assert "eyJ" not in text  # no JWT (every access token the subprocesses got) in any output
