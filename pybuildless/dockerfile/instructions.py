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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pybuildless.dockerfile.lex import WordError, expand_heredoc_body, process_word, process_words
from pybuildless.dockerfile.mounts import Mount, MountError, parse_mount
from pybuildless.dockerfile.syntax import Heredoc, parse_heredoc_word
from pybuildless.errors import DockerfileError

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


@dataclass(frozen=True)
class ResolvedRun:
    """What to execute for a RUN: ``argv`` plus files to provide first (path, content, mode)."""

    argv: tuple[str, ...]
    files: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    """``RUN``. ``mounts`` are the raw ``--mount`` values; ``heredocs`` the bodies (never expanded)."""

    command: CommandLine
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[str, ...] = ()
    network: str | None = None
    security: str | None = None
    keyword = "RUN"

    def expanded_mounts(self, env: Mapping[str, str]) -> tuple[Mount, ...]:
        """Parse the mounts with their values expanded (all but ``from``)."""
        try:
            return tuple(parse_mount(spec, lambda w: self._word(w, env)) for spec in self.mounts)
        except MountError as exc:
            raise self.error(str(exc)) from None

    def resolve(self, shell: Sequence[str] = DEFAULT_SHELL) -> ResolvedRun:
        """BuildKit's heredoc rules: a lone ``<<EOF`` with a ``#!`` body runs as a script file
        under ``/dev/pipes/``; a lone heredoc without shebang is the shell's script text;
        otherwise the line plus bodies and terminators goes to the shell."""
        if not self.heredocs or self.command.json:
            return ResolvedRun(tuple(self.command.argv(shell)))
        text = self.command.args[0]
        first = self.heredocs[0]
        if len(self.heredocs) == 1 and parse_heredoc_word(text.strip()) is not None:
            body = first.body()
            if body.startswith("#!"):
                script = f"/dev/pipes/{first.name}"
                return ResolvedRun((script,), ((script, body, 0o755),))
            return ResolvedRun((*shell, body))
        full = text + "".join(f"\n{doc.content}{doc.name}" for doc in self.heredocs)
        return ResolvedRun((*shell, full))


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    """``CMD``: stored, not run. Shell form uses the SHELL in effect at this point."""

    command: CommandLine
    keyword = "CMD"


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    """``ENTRYPOINT``. Executor rule (BuildKit): setting ENTRYPOINT resets an inherited
    ``Config.Cmd`` to null unless a CMD was set earlier *in the same stage*; ``ENTRYPOINT []``
    sets it to null."""

    command: CommandLine
    keyword = "ENTRYPOINT"


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    """``SHELL ["exe", "args"...]`` (JSON only). Affects later shell-form RUN/CMD/ENTRYPOINT/HEALTHCHECK."""

    argv: tuple[str, ...]
    keyword = "SHELL"


@dataclass(frozen=True)
class HeredocSource:
    """A COPY/ADD source given inline: a file named ``name`` with ``data``, mode 0644."""

    name: str
    data: str
    expand: bool


@dataclass(frozen=True, kw_only=True)
class _CopyLike(Instruction):
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


@dataclass(frozen=True, kw_only=True)
class _Pairs(Instruction):
    pairs: tuple[tuple[str, str], ...]
    legacy: bool = False  # ``KEY value`` instead of ``KEY=value``

    def expand(self, env: Mapping[str, str]):  # noqa: ANN201 - returns the subclass
        # Same-instruction rule: every word sees the values from *before* this instruction.
        pairs = tuple((self._word(k, env), self._word(v, env)) for k, v in self.pairs)
        for key, _ in pairs:
            if not key:
                raise self.error(f"{self.keyword} names can not be blank")
        return replace(self, pairs=pairs)


@dataclass(frozen=True, kw_only=True)
class Env(_Pairs):
    """``ENV k=v ...`` (or legacy ``ENV k v w``)."""

    keyword = "ENV"


@dataclass(frozen=True, kw_only=True)
class Label(_Pairs):
    """``LABEL k=v ...``."""

    keyword = "LABEL"


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """``ARG a a=1 b="x y"``; a ``None`` default means no default (the ARG may stay unset)."""

    pairs: tuple[tuple[str, str | None], ...]
    keyword = "ARG"

    def expand(self, env: Mapping[str, str]) -> Arg:
        return replace(self, pairs=tuple((self._word(k, env), self._opt(v, env)) for k, v in self.pairs))


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
class _Single(Instruction):
    value: str

    def expand(self, env: Mapping[str, str]):  # noqa: ANN201 - returns the subclass
        return replace(self, value=self._word(self.value, env))


@dataclass(frozen=True, kw_only=True)
class User(_Single):
    """``USER name|uid[:group|gid]``: stored verbatim, resolved in the rootfs at RUN time."""

    keyword = "USER"


@dataclass(frozen=True, kw_only=True)
class Workdir(_Single):
    """``WORKDIR path``: relative paths join the previous WORKDIR (the executor's job)."""

    keyword = "WORKDIR"


@dataclass(frozen=True, kw_only=True)
class StopSignal(_Single):
    """``STOPSIGNAL SIGTERM|TERM|15``."""

    keyword = "STOPSIGNAL"


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """``HEALTHCHECK NONE`` (``test == ("NONE",)``) or ``[opts] CMD ...``.

    ``test`` is the config ``Healthcheck.Test``: ``("CMD-SHELL", text)`` or ``("CMD", *argv)``.
    Durations are integer nanoseconds; 0 (unset) is written as 0, never as runtime defaults.
    """

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0
    keyword = "HEALTHCHECK"


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


EXPANDING_TYPES = (From, Copy, Add, Env, Label, Arg, Expose, Volume, User, Workdir, StopSignal)
ALL_TYPES = (From, Run, Cmd, Entrypoint, Shell, Copy, Add, Env, Arg, Label, Expose, Volume, User, Workdir,
             StopSignal, Healthcheck, Onbuild, Maintainer)  # fmt: skip
