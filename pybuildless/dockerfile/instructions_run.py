"""RUN: the command, its heredocs and ``--mount`` values (see ``instructions``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pybuildless.dockerfile.instructions import DEFAULT_SHELL, CommandLine, Instruction
from pybuildless.dockerfile.mounts import Mount, MountError, parse_mount
from pybuildless.dockerfile.syntax import Heredoc, parse_heredoc_word


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
