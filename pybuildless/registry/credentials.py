"""Registry credentials from Docker's ``config.json`` and credential helpers.

Lookup per registry host (docker/cli): ``credHelpers[host]`` → ``credsStore`` →
``auths``; ``DOCKER_AUTH_CONFIG`` (a whole config.json in the environment) is
consulted before the file. Every secret read is registered with the log
redactor straight away; helper output is never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from pybuildless import log
from pybuildless.errors import PybuildlessError
from pybuildless.name import DOCKER_HUB, normalise_registry

logger = logging.getLogger(__name__)

HUB_CONFIG_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30.0


class CredentialsError(PybuildlessError):
    """config.json unreadable or a credential helper failed."""


@dataclass(frozen=True)
class Credential:
    """What to authenticate to one registry with."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # OAuth2 refresh token
    registry_token: str = field(default="", repr=False)  # a ready Bearer token

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def __post_init__(self) -> None:
        for secret in (self.password, self.identity_token, self.registry_token):
            log.register_secret(secret)


ANONYMOUS = Credential()


class Keychain(Protocol):
    def resolve(self, registry: str) -> Credential:
        """Credentials for a registry host (``docker.io``, ``localhost:5000``); ANONYMOUS if none."""
        ...


class AnonymousKeychain:
    def resolve(self, registry: str) -> Credential:
        return ANONYMOUS


@dataclass(frozen=True)
class StaticKeychain:
    """Fixed credentials per host (``--username``-style flags, tests)."""

    entries: tuple[tuple[str, Credential], ...]

    def resolve(self, registry: str) -> Credential:
        for host, cred in self.entries:
            if normalise_registry(host) == normalise_registry(registry):
                return cred
        return ANONYMOUS


@dataclass(frozen=True)
class MultiKeychain:
    """The first keychain with a non-anonymous answer wins (kaniko chains several)."""

    keychains: tuple[Keychain, ...]

    def resolve(self, registry: str) -> Credential:
        for keychain in self.keychains:
            cred = keychain.resolve(registry)
            if not cred.anonymous:
                return cred
        return ANONYMOUS


def config_key_to_host(key: str) -> str:
    """docker/cli ConvertToHostname: strip scheme and path; Hub's keys collapse to docker.io."""
    host = key
    for scheme in ("http://", "https://"):
        if host.startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0]
    return normalise_registry(host)


def _server_url(registry: str) -> str:
    """What helpers are asked for: Hub's historic key, else the bare host."""
    return HUB_CONFIG_KEY if normalise_registry(registry) == DOCKER_HUB else registry


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{where}: 'auth' is not valid base64") from None
    user, sep, password = decoded.partition(":")  # split on the FIRST colon
    if not sep:
        raise CredentialsError(f"{where}: 'auth' must encode 'username:password'")
    log.register_secret(password.rstrip("\x00"))
    return user, password.rstrip("\x00")


def _entry_credential(entry: dict[str, Any], where: str) -> Credential:
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    if entry.get("auth"):
        username, password = _decode_auth(entry["auth"], where)
    return Credential(
        username=username,
        password=password,
        identity_token=entry.get("identitytoken") or "",
        registry_token=entry.get("registrytoken") or "",
    )


def run_helper(name: str, server_url: str, *, timeout: float = HELPER_TIMEOUT) -> Credential:
    """``docker-credential-<name> get`` with the server URL on stdin (no shell)."""
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, "get"], input=server_url.encode(), capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {program} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {program} timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        # Never echo the helper's output: it may contain secrets. "not found" means anonymous.
        if b"credentials not found" in proc.stdout.lower() + proc.stderr.lower():
            return ANONYMOUS
        raise CredentialsError(f"credential helper {program} failed with exit status {proc.returncode}")
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise CredentialsError(f"credential helper {program} printed invalid JSON") from None
    username, secret = doc.get("Username") or "", doc.get("Secret") or ""
    log.register_secret(secret)
    if not secret:  # some helpers answer "not found" with empty fields
        return ANONYMOUS
    if username == "<token>":
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)


class DockerConfigKeychain:
    """Credentials from a config.json document (file or ``DOCKER_AUTH_CONFIG``)."""

    def __init__(self, config: dict[str, Any], source: str) -> None:
        self.config = config
        self.source = source
        entries = config.get("auths")
        for entry in entries.values() if isinstance(entries, dict) else ():  # not a dict: an error on use
            if isinstance(entry, dict):
                for k in ("password", "identitytoken", "registrytoken"):
                    log.register_secret(entry.get(k))
                if isinstance(entry.get("auth"), str):
                    try:  # register the password now; errors are reported when the entry is used
                        _decode_auth(entry["auth"], "")
                    except CredentialsError:
                        pass

    @classmethod
    def from_file(cls, path: Path) -> "DockerConfigKeychain":
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls({}, str(path))
        except OSError as e:
            raise CredentialsError(f"{path}: cannot read: {e.strerror}") from None
        return cls.from_text(text, str(path))

    @classmethod
    def from_text(cls, text: str, source: str) -> "DockerConfigKeychain":
        if not text.strip():
            return cls({}, source)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise CredentialsError(f"{source}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"{source}: expected a JSON object")
        return cls(doc, source)

    def _auth_entry(self, registry: str) -> dict[str, Any] | None:
        auths = self.config.get("auths") or {}
        if not isinstance(auths, dict):
            raise CredentialsError(f"{self.source}: 'auths' must be an object")
        host = normalise_registry(registry)
        candidates = [registry, host]
        if host == DOCKER_HUB:
            candidates.insert(0, HUB_CONFIG_KEY)
        for key in candidates:  # exact keys first ...
            if isinstance(auths.get(key), dict):
                return auths[key]
        for key, entry in auths.items():  # ... then normalised ones (scheme, path, Hub aliases)
            if isinstance(entry, dict) and config_key_to_host(key) == host:
                return entry
        return None

    def resolve(self, registry: str) -> Credential:
        host = normalise_registry(registry)
        helpers = self.config.get("credHelpers") or {}
        helper = None
        for key, name in helpers.items():
            if key == registry or config_key_to_host(key) == host:
                helper = name
                break
        helper = helper or self.config.get("credsStore")
        if helper:
            cred = run_helper(helper, _server_url(registry))
            if not cred.anonymous:
                logger.debug("credentials for %s from credential helper %s", registry, helper)
                return cred
        entry = self._auth_entry(registry)
        if entry is None:
            return ANONYMOUS
        cred = _entry_credential(entry, f"{self.source}: auths[{registry}]")
        if not cred.anonymous:
            logger.debug("credentials for %s from %s", registry, self.source)
        return cred


def docker_config_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME") or Path.home()) / ".docker"


def containers_auth_files(env: dict[str, str]) -> list[Path]:
    """podman/skopeo/buildah's auth.json locations (same ``auths`` format), as ggcr also reads them."""
    paths = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    if env.get("XDG_CONFIG_HOME"):
        paths.append(Path(env["XDG_CONFIG_HOME"]) / "containers" / "auth.json")
    return paths


def default_keychain(env: dict[str, str] | None = None) -> Keychain:
    """``DOCKER_AUTH_CONFIG``, then ``$DOCKER_CONFIG/config.json`` (default ``~/.docker``), then the
    containers ``auth.json`` files; the first with credentials for a host wins."""
    env = dict(os.environ if env is None else env)
    chain: list[Keychain] = []
    if env.get("DOCKER_AUTH_CONFIG"):
        chain.append(DockerConfigKeychain.from_text(env["DOCKER_AUTH_CONFIG"], "DOCKER_AUTH_CONFIG"))
    chain.append(DockerConfigKeychain.from_file(docker_config_dir(env) / "config.json"))
    chain.extend(DockerConfigKeychain.from_file(p) for p in containers_auth_files(env))
    return MultiKeychain(tuple(chain))


__all__: Sequence[str] = (
    "ANONYMOUS",
    "AnonymousKeychain",
    "Credential",
    "CredentialsError",
    "DockerConfigKeychain",
    "Keychain",
    "MultiKeychain",
    "StaticKeychain",
    "default_keychain",
    "run_helper",
)
