"""Typed Dockerfile instructions: one frozen dataclass per kind.

Every instruction carries ``path``, ``line``/``end_line`` (1-based, the whole span including
continuations and heredoc bodies), ``original`` (the logical line, for history ``created_by``),
``escape`` (the file's escape char) and its *raw* words: nothing is expanded at parse time.

Instructions that BuildKit expands have ``expand(env) -> same type`` with the words processed
by ``lex.process_word`` (quotes removed, variables substituted; ``env`` is a Mapping where an
absent key means unset): ADD, COPY (sources, destination, ``--chown``, ``--chmod``,
``--checksum``, heredoc bodies unless the delimiter was quoted; never ``--from``), ENV and
LABEL (keys and values), ARG (keys and defaults; ``ArgScope`` handles build-arg precedence),
EXPOSE (split into words), FROM (image and ``--platform``, with meta ARGs only), USER, VOLUME,
WORKDIR, STOPSIGNAL. RUN's ``--mount`` values (except ``from``) expand through
``Run.expanded_mounts(env)``. RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and MAINTAINER are never
expanded (the shell does it at run time, or nothing does).

Every name is read from this module (``ins.Run``), but only the base class, FROM and ARG (in
nearly every Dockerfile) are defined here: the other kinds live in one small module per family
(``instructions_run``, ``_copy``, ``_pairs``, ``_single``, ``_command``, ``_declare``), loaded on
first use. Creating a frozen dataclass runs six generated methods through ``exec`` (~0.5 ms each
class on Python 3.11), and a build only needs the kinds its Dockerfile has. So code that only
asks *which* kind an instruction is compares ``keyword`` (``inst.keyword == "RUN"``, or
``EXPANDING_KEYWORDS``) instead of ``isinstance``, which would load the family to get the class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pybuildless.dockerfile.lex import WordError, process_word, process_words
from pybuildless.errors import DockerfileError
from pybuildless.lazyexports import lazy_exports

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """Fields common to all instructions."""

    path: str = "Dockerfile"
    line: int = 0
    end_line: int = 0
    original: str = ""
    escape: str = field(default="\\", compare=False)

    keyword = "?"

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(message, path=self.path, line=self.line)

    def _word(self, word: str, env: Mapping[str, str]) -> str:
        try:
            return process_word(word, env, self.escape)
        except WordError as exc:
            raise self.error(exc.bare_message) from None

    def _words(self, word: str, env: Mapping[str, str]) -> list[str]:
        try:
            return process_words(word, env, self.escape)
        except WordError as exc:
            raise self.error(exc.bare_message) from None

    def _opt(self, word: str | None, env: Mapping[str, str]) -> str | None:
        return None if word is None else self._word(word, env)


@dataclass(frozen=True)
class CommandLine:
    """A RUN/CMD/ENTRYPOINT/HEALTHCHECK command: exec form (``json``) or one shell string."""

    args: tuple[str, ...]
    json: bool

    def argv(self, shell: Sequence[str] = DEFAULT_SHELL) -> list[str]:
        """The process argv: the JSON array as is, or ``shell + [text]``."""
        return list(self.args) if self.json else [*shell, *self.args]


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    """``FROM [--platform=p] image [AS name]``; ``name`` is lower-cased, None if absent."""

    image: str
    name: str | None = None
    platform: str | None = None
    keyword = "FROM"

    def expand(self, env: Mapping[str, str]) -> From:
        image = self._word(self.image, env)
        if not image:
            raise self.error(f"base name ({self.image}) should not be blank")
        return replace(self, image=image, platform=self._opt(self.platform, env))


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """``ARG a a=1 b="x y"``; a ``None`` default means no default (the ARG may stay unset)."""

    pairs: tuple[tuple[str, str | None], ...]
    keyword = "ARG"

    def expand(self, env: Mapping[str, str]) -> Arg:
        return replace(self, pairs=tuple((self._word(k, env), self._opt(v, env)) for k, v in self.pairs))


# The keywords whose instructions have ``expand(env)`` (StageEnv expands them in the stage's scope).
EXPANDING_KEYWORDS = frozenset(
    {"FROM", "COPY", "ADD", "ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "USER", "WORKDIR", "STOPSIGNAL"})

# family module -> the instructions it defines, loaded when one of its names is first read
_FAMILIES = {
    "instructions_run": "Run ResolvedRun",
    "instructions_copy": "Copy Add HeredocSource",
    "instructions_pairs": "Env Label",
    "instructions_single": "User Workdir StopSignal",
    "instructions_command": "Cmd Entrypoint Shell Healthcheck",
    "instructions_declare": "Expose Volume Onbuild Maintainer",
}
_lazy_getattr, _lazy_dir = lazy_exports(
    "pybuildless.dockerfile", {name: module for module, names in _FAMILIES.items() for name in names.split()},
    module=__name__, namespace=globals())
# Tuples of classes load every family: for code that really needs the classes.
_TYPE_TUPLES = {
    "EXPANDING_TYPES": "From Copy Add Env Label Arg Expose Volume User Workdir StopSignal",
    "ALL_TYPES": "From Run Cmd Entrypoint Shell Copy Add Env Arg Label Expose Volume User Workdir StopSignal "
                 "Healthcheck Onbuild Maintainer",
}


def __getattr__(name: str):  # noqa: ANN202 - a class, or a tuple of them
    names = _TYPE_TUPLES.get(name)
    if names is None:
        return _lazy_getattr(name)
    value = globals()[name] = tuple(globals().get(n) or _lazy_getattr(n) for n in names.split())
    return value


def __dir__() -> list[str]:
    return sorted({*_lazy_dir(), *_TYPE_TUPLES})
