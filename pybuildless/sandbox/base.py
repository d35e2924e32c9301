"""The Sandbox seam and what every implementation shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Protocol, Sequence, Union, runtime_checkable

from pybuildless.errors import SandboxError
from pybuildless.sandbox import _linux

if TYPE_CHECKING:
    from pybuildless.fs.changes import Changes
    from pybuildless.fs.users import ResolvedUser
    from pybuildless.sandbox.extra_mounts import Mount

log = logging.getLogger(__name__)

Sink = Union[BinaryIO, Callable[[bytes], None]]
NETWORK_MODES = ("default", "host", "none")
# Offered a RUN's overlay upper dir (the overlay gone, its changes read): True when it took the dir
# (moved it away and made the root show it, e.g. stacked as a lower dir), False to have it applied.
UpperKeeper = Callable[[Path, "Changes"], bool]


@runtime_checkable
class Sandbox(Protocol):
    """Runs one RUN command against a stage root.

    ``run`` returns a ``RunResult``: the command's exit status (128+n when killed by
    signal n) and, when it ran on an overlay, the step's changes;
    stdout and stderr are merged into ``stdout``. It raises ``SandboxError``
    when the isolation cannot be set up (or a mount is unusable) and ``CommandNotFoundError`` (a
    ``BuildError`` with exit code 127/126) when the executable cannot be run.

    ``keep_upper``: when the step ran on an overlay, its upper dir is offered there instead of
    being applied onto the root (the stage root decides; sandboxes without overlays ignore it).
    """

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str, user: "ResolvedUser",
            stdout: Sink, network: str = "default", mounts: Sequence["Mount"] = (),
            keep_upper: UpperKeeper | None = None) -> "RunResult": ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunResult:
    """What one RUN command left behind.

    ``exit_code``: its exit status (128+n when killed by signal n).
    ``changes``: what the step changed, read from the overlay upper dir it ran on (already
    moved onto the root, or stacked on it by ``keep_upper``, when ``run`` returns); None when
    it wrote straight into the root, and the caller must look at the root itself.
    ``upper_kept``: the upper dir was taken by ``keep_upper`` rather than applied.
    """

    exit_code: int
    changes: "Changes | None" = None
    upper_kept: bool = False


def as_sink(stdout: Sink) -> Callable[[bytes], None]:
    write = getattr(stdout, "write", None)
    if write is None:
        if not callable(stdout):
            raise TypeError("stdout must be a binary file or a callable taking bytes")
        return stdout

    def sink(chunk: bytes) -> None:
        write(chunk)
        flush = getattr(stdout, "flush", None)
        if flush is not None:
            flush()

    return sink


def check_run_args(argv: list[str], env: dict[str, str], network: str) -> None:
    if not argv or not all(isinstance(a, str) for a in argv):
        raise SandboxError(f"RUN needs a non-empty list of string arguments, got {argv!r}")
    if any("\0" in a for a in argv) or any("\0" in k or "\0" in v or "=" in k or not k for k, v in env.items()):
        raise SandboxError("RUN arguments and environment must not contain NUL bytes or '=' in names")
    if network not in NETWORK_MODES:
        raise SandboxError(f"RUN --network={network}: unsupported (expected one of {', '.join(NETWORK_MODES)})")


def probe_namespaces(flags: int) -> bool:
    ok = _linux.can_unshare(flags)
    if not ok:
        log.info("cannot create namespaces (flags %#x) here; using the fallback", flags)
    return ok
