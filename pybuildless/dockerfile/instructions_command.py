"""CMD, ENTRYPOINT, SHELL and HEALTHCHECK: what the container runs (see ``instructions``)."""

from __future__ import annotations

from dataclasses import dataclass

from pybuildless.dockerfile.instructions import CommandLine, Instruction


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
