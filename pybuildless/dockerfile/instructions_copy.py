"""COPY and ADD, with their inline (heredoc) sources (see ``instructions``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pybuildless.dockerfile.instructions import Instruction
from pybuildless.dockerfile.lex import WordError, expand_heredoc_body


@dataclass(frozen=True)
class HeredocSource:
    """A COPY/ADD source given inline: a file named ``name`` with ``data``, mode 0644."""

    name: str
    data: str
    expand: bool


@dataclass(frozen=True, kw_only=True)
class _CopyLike(Instruction):
    """The fields COPY and ADD share."""

    sources: tuple[str, ...]
    dest: str
    inline: tuple[HeredocSource, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    excludes: tuple[str, ...] = ()
    json: bool = False

    def _expand_common(self, env: Mapping[str, str]) -> dict[str, object]:
        inline = tuple(
            replace(src, data=self._heredoc(src.data, env), expand=False) if src.expand else src for src in self.inline
        )
        return {
            "sources": tuple(self._word(s, env) for s in self.sources),
            "dest": self._word(self.dest, env),
            "inline": inline,
            "chown": self._opt(self.chown, env),
            "chmod": self._opt(self.chmod, env),
            "excludes": tuple(self._word(e, env) for e in self.excludes),
        }

    def _heredoc(self, data: str, env: Mapping[str, str]) -> str:
        try:
            return expand_heredoc_body(data, env)
        except WordError as exc:
            raise self.error(exc.bare_message) from None


@dataclass(frozen=True, kw_only=True)
class Copy(_CopyLike):
    """``COPY``. ``from_`` is a stage name, stage index or image reference (never expanded)."""

    from_: str | None = None
    parents: bool = False
    keyword = "COPY"

    def expand(self, env: Mapping[str, str]) -> Copy:
        return replace(self, **self._expand_common(env))  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class Add(_CopyLike):
    """``ADD``: like COPY plus URLs, git sources and archive extraction."""

    checksum: str | None = None
    keep_git_dir: bool | None = None
    unpack: bool | None = None
    keyword = "ADD"

    def expand(self, env: Mapping[str, str]) -> Add:
        values = self._expand_common(env)
        return replace(self, checksum=self._opt(self.checksum, env), **values)  # type: ignore[arg-type]
