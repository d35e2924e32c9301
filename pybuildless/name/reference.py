"""Image references, parsed and normalised as Docker does (distribution/reference).

``parse_reference("busybox")`` gives ``docker.io/library/busybox:latest``;
``str()`` keeps the user's original text, ``.name`` is fully qualified and
``.context``/``.identifier`` split it into repository and tag-or-digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from pybuildless.errors import ReferenceError_

DOCKER_HUB = "docker.io"
# The host that actually serves the v2 API for Docker Hub (containerd resolver.go).
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_IMAGE_ID = re.compile(r"^[a-f0-9]{64}$")
# go-digest's Validate: only the algorithms Docker links in, each with exactly this many lowercase hex digits
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


def _digest_problem(digest: str) -> str | None:
    """Why go-digest refuses a digest the reference grammar allows, or None."""
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        return f"unsupported digest algorithm {algorithm!r}"
    if not re.fullmatch(f"[a-f0-9]{{{length}}}", encoded):
        return f"a {algorithm} digest has {length} lowercase hex digits"
    return None


@dataclass(frozen=True)
class Reference:
    """An image reference split into registry, repository, tag and digest."""

    registry: str  # as written after normalisation: "docker.io", "localhost:5000"
    repository: str  # "library/busybox"
    tag: str | None = None
    digest: str | None = None
    original: str = field(default="", compare=False)

    # -- renderings (ggcr name.Reference) -------------------------------------------------

    @property
    def context(self) -> str:
        """The fully qualified repository: ``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """The digest if there is one (it wins over the tag), else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        """Fully qualified: ``registry/repo:tag``, ``registry/repo@digest`` or both."""
        text = self.context
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def api_host(self) -> str:
        """The host:port to contact for the v2 API."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_digest(self) -> bool:
        return self.digest is not None

    def scope(self, action: str) -> str:
        return f"repository:{self.repository}:{action}"

    def with_tag(self, tag: str) -> "Reference":
        if not _TAG.match(tag):
            raise ReferenceError_(f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None, original="")

    def with_digest(self, digest: str) -> "Reference":
        if not _DIGEST.match(digest):
            raise ReferenceError_(f"invalid digest {digest!r}")
        problem = _digest_problem(digest)
        if problem:
            raise ReferenceError_(f"invalid digest {digest!r}: {problem}")
        return replace(self, digest=digest, original="")

    def with_registry(self, registry: str, repository: str | None = None) -> "Reference":
        return replace(self, registry=registry, repository=repository or self.repository, original="")

    def __str__(self) -> str:
        return self.original or self.name


def normalise_registry(host: str) -> str:
    """Docker Hub's aliases collapse to ``docker.io``; other hosts are lowercased."""
    host = host.lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def _split_domain(name: str) -> tuple[str, str]:
    """distribution's splitDockerDomain: is the first component a registry host?"""
    first, sep, rest = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, remainder = DOCKER_HUB, name
    else:
        domain, remainder = first, rest
    domain = normalise_registry(domain)
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse an image reference; raise ``ReferenceError_`` with the reason when invalid.

    ``default_tag=False`` leaves ``tag`` as None when neither tag nor digest is given.
    """
    original = text
    text = text.strip()
    if not text:
        raise ReferenceError_("invalid reference: empty")
    if _IMAGE_ID.match(text):
        raise ReferenceError_(f"invalid reference {original!r}: a bare 64-hex string is an image ID, not a name")

    digest = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not _DIGEST.match(digest):
            raise ReferenceError_(f"invalid reference {original!r}: bad digest {digest!r}")
        problem = _digest_problem(digest)
        if problem:
            raise ReferenceError_(f"invalid reference {original!r}: {problem}")

    # The tag follows the last ':' after the last '/', so "localhost:5000/foo" has no tag.
    tag = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.match(tag):
            raise ReferenceError_(f"invalid reference {original!r}: bad tag {tag!r}")

    if not text:
        raise ReferenceError_(f"invalid reference {original!r}: missing repository name")
    domain, path = _split_domain(text)
    if not _DOMAIN.match(domain):
        raise ReferenceError_(f"invalid reference {original!r}: bad registry host {domain!r}")
    if path != path.lower():
        raise ReferenceError_(f"invalid reference {original!r}: repository name must be lowercase")
    if not _PATH.match(path):
        raise ReferenceError_(
            f"invalid reference {original!r}: repository {path!r} must be lowercase letters, digits "
            "and separators ('.', '_', '__', '-') between '/'-separated components"
        )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError_(
            f"invalid reference {original!r}: repository name longer than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry=domain, repository=path, tag=tag, digest=digest, original=original.strip())


def parse_repository(text: str) -> Reference:
    """A repository without tag or digest (``--cache-repo``, mount sources)."""
    ref = parse_reference(text, default_tag=False)
    if ref.tag or ref.digest:
        raise ReferenceError_(f"invalid repository {text!r}: no tag or digest allowed here")
    return ref
