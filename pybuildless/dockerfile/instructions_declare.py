"""EXPOSE, VOLUME, ONBUILD and MAINTAINER: declarations stored in the image config (see
``instructions``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pybuildless.dockerfile.instructions import Instruction


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    """``EXPOSE 80 443/tcp 1000-2000/udp``; ``expand`` splits expanded words (``ProcessWords``)."""

    ports: tuple[str, ...]
    keyword = "EXPOSE"

    def expand(self, env: Mapping[str, str]) -> Expose:
        return replace(self, ports=tuple(w for p in self.ports for w in self._words(p, env)))


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    """``VOLUME /a /b`` or ``VOLUME ["/a"]``."""

    paths: tuple[str, ...]
    keyword = "VOLUME"

    def expand(self, env: Mapping[str, str]) -> Volume:
        paths = tuple(self._word(p, env) for p in self.paths)
        if any(not p.strip() for p in paths):
            raise self.error("VOLUME specified can not be an empty string")
        return replace(self, paths=paths)


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    """``ONBUILD <trigger>``: ``trigger`` is stored in ``Config.OnBuild`` (heredoc bodies included)."""

    trigger: str
    keyword = "ONBUILD"


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated, never expanded). BuildKit sets ``Config.Author``."""

    name: str
    keyword = "MAINTAINER"

    @property
    def author(self) -> str:
        return self.name

    def as_label(self) -> tuple[str, str]:
        """The ``maintainer`` label that replaces this instruction in modern Dockerfiles."""
        return ("maintainer", self.name)
