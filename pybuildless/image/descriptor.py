"""Value types shared by every part of the image model: Digest, Descriptor, Platform."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pybuildless.errors import ImageFormatError

_ALGORITHM = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$")
_ENCODED = re.compile(r"^[a-zA-Z0-9=_-]+$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest, ``algorithm:hex``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        algorithm, sep, encoded = text.partition(":")
        if not sep or not _ALGORITHM.match(algorithm) or not _ENCODED.match(encoded):
            raise ImageFormatError(f"invalid digest {text!r}")
        want = _HEX_LENGTH.get(algorithm)
        if want is not None and (len(encoded) != want or not re.fullmatch(r"[a-f0-9]+", encoded)):
            raise ImageFormatError(f"invalid {algorithm} digest {text!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> "Digest":
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self):
        """A fresh hashlib object of this digest's algorithm."""
        try:
            return hashlib.new(self.algorithm)
        except ValueError:
            raise ImageFormatError(f"unsupported digest algorithm {self.algorithm!r}") from None

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os, architecture, variant and os.version."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse 'os/arch[/variant]' (or just 'arch'), normalising as containerd does."""
        parts = [p for p in text.strip().lower().split("/")]
        if not parts or any(not p for p in parts) or len(parts) > 3:
            raise ImageFormatError(f"invalid platform {text!r}: expected os/arch[/variant]")
        if len(parts) == 1:
            return cls.normalise("linux", parts[0], "")
        return cls.normalise(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def normalise(cls, os: str, arch: str, variant: str = "") -> "Platform":
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm64" and variant == "v8":
            variant = ""  # arm64 implies v8
        if arch == "arm" and not variant:
            variant = "v7"
        return cls(os=os, architecture=arch, variant=variant)

    @classmethod
    def host(cls) -> "Platform":
        return cls.normalise("linux", os.uname().machine.lower())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Platform":
        p = cls.normalise(d.get("os", ""), d.get("architecture", ""), d.get("variant", "") or "")
        return cls(p.os, p.architecture, p.variant, d.get("os.version", "") or "")

    def to_dict(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    def matches(self, other: "Platform") -> bool:
        """True when ``other`` (an index entry) can serve a request for ``self``."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or not other.variant or self.variant == other.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor. ``extra`` keeps unknown fields (urls, annotations, ...)."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Descriptor":
        try:
            digest = Digest.parse(d["digest"])
            size = int(d["size"])
        except (KeyError, TypeError, ValueError) as e:
            raise ImageFormatError(f"invalid descriptor {d!r}: {e}") from None
        known = {"mediaType", "digest", "size", "platform", "annotations"}
        return cls(
            media_type=d.get("mediaType", ""),
            digest=digest,
            size=size,
            platform=Platform.from_dict(d["platform"]) if d.get("platform") else None,
            annotations=tuple(sorted((d.get("annotations") or {}).items())),
            extra=tuple((k, v) for k, v in d.items() if k not in known),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        d.update(dict(self.extra))
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_dict()
        return d
