"""Live progress of blob transfers (pulls and pushes) on a terminal.

The registry code reports every blob it streams through a small hook:
``start(digest, size, verb)`` returns a ``Transfer`` whose ``advance(n)`` and
``finish()`` it calls as bytes move. The hook installed by default does nothing,
so library use, tests and CI logs are unaffected. The CLI calls ``enable`` after
setting up logging: only when stderr is a terminal and the log format is not
json does it install a ``TerminalProgress`` that keeps one line per active blob
at the bottom of the terminal, like::

    pulling sha256:0123456789ab  12.3MB/45.6MB

Anything else written to that terminal must go through ``paused()`` (the log
handler in ``pybuildless.log`` and RUN output do): the lines are erased first
and redrawn after, so a log record is never written into the middle of them.

This module sits below every other layer: it imports nothing from the package.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from typing import Callable, ContextManager, Iterator, Protocol, TextIO

INTERVAL = 0.1  # at most ten redraws a second: a fast pull must not flood the terminal
MAX_LINES = 8  # more blobs at once are summed up in one line, so the block always fits


class Transfer(Protocol):
    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class TransferHook(Protocol):
    def start(self, digest: str, size: int, verb: str) -> Transfer: ...

    def paused(self, *, redraw: bool = True) -> ContextManager[None]: ...


class _NullTransfer:
    __slots__ = ()

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


NULL_TRANSFER = _NullTransfer()


class NullHook:
    """The default: no display, no cost beyond a method call per chunk."""

    def start(self, digest: str, size: int, verb: str) -> Transfer:
        return NULL_TRANSFER

    def paused(self, *, redraw: bool = True) -> ContextManager[None]:
        return contextlib.nullcontext()


_hook: TransferHook = NullHook()


def start(digest: str, size: int, verb: str) -> Transfer:
    """Report a blob transfer to the installed hook (``verb`` is "pulling" or "pushing")."""
    return _hook.start(digest, size, verb)


def paused(*, redraw: bool = True) -> ContextManager[None]:
    """Hide the live lines while the caller writes to the terminal.

    ``redraw=False`` keeps them hidden until the next paused write that ends a line
    (output that stops mid-line, such as a RUN step's own progress bar, would
    otherwise get the lines glued to it).
    """
    return _hook.paused(redraw=redraw)


def install(hook: TransferHook | None) -> TransferHook:
    """Make ``hook`` (None: the no-op hook) the one every transfer reports to; returns the old one."""
    global _hook
    old, _hook = _hook, hook if hook is not None else NullHook()
    return old


def enable(stream: TextIO, log_format: str) -> "TerminalProgress | None":
    """Install a terminal display on ``stream`` when it is a terminal and logs are not json."""
    if log_format == "json" or not _isatty(stream) or os.environ.get("TERM") == "dumb":
        install(None)
        return None
    display = TerminalProgress(stream)
    install(display)
    atexit.register(display.close)  # an interrupted run must not leave stale lines behind
    return display


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def human_size(n: int) -> str:
    """Decimal units with one decimal, as registries and docker report sizes: 12.3MB."""
    if n < 1000:
        return f"{n}B"
    size = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.1f}{unit}"
    raise AssertionError("unreachable")


class _Line:
    """One active blob on the display (its counters are guarded by the display's lock)."""

    __slots__ = ("display", "digest", "size", "verb", "done", "finished")

    def __init__(self, display: "TerminalProgress", digest: str, size: int, verb: str) -> None:
        self.display, self.digest, self.size, self.verb = display, digest, size, verb
        self.done = 0
        self.finished = False

    def advance(self, n: int) -> None:
        self.display._advance(self, n)

    def finish(self) -> None:
        self.display._finish(self)

    def text(self) -> str:
        algorithm, _, hex_ = self.digest.partition(":")
        short = f"{algorithm}:{hex_[:12]}" if hex_ else self.digest[:19]
        total = f"/{human_size(self.size)}" if self.size > 0 else ""
        return f"{self.verb} {short}  {human_size(self.done)}{total}"


class TerminalProgress:
    """One redrawn line per active blob at the bottom of a terminal; thread-safe.

    The block is drawn from the cursor's line downwards and the cursor is left on
    the line below it, so erasing means moving up over the lines drawn and
    clearing to the end of the screen.
    """

    def __init__(self, stream: TextIO, *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None) -> None:
        self.stream = stream
        self.interval = interval
        self._clock = clock
        self._width = width
        self._lock = threading.RLock()
        self._lines: list[_Line] = []
        self._drawn = 0  # lines of the block currently on the screen
        self._last = float("-inf")  # when the block was last drawn
        self._hidden = False  # after output that did not end its line
        self._broken = False  # the terminal went away: stop writing to it

    # -- the hook ---------------------------------------------------------------------

    def start(self, digest: str, size: int, verb: str) -> Transfer:
        line = _Line(self, digest, size, verb)
        with self._lock:
            self._lines.append(line)
        # Not drawn yet: the first bytes draw it, so a blob already cached never flickers.
        return line

    @contextlib.contextmanager
    def paused(self, *, redraw: bool = True) -> Iterator[None]:
        with self._lock:
            self._erase()
            try:
                yield
            finally:
                self._hidden = not redraw
                if redraw and self._lines:
                    self._draw()

    def close(self) -> None:
        """Forget every transfer and erase the block (end of the command)."""
        with self._lock:
            self._lines.clear()
            self._erase()

    # -- called through the _Line handles ----------------------------------------------

    def _advance(self, line: _Line, n: int) -> None:
        with self._lock:
            line.done += n
            if self._clock() - self._last >= self.interval:
                self._draw()

    def _finish(self, line: _Line) -> None:
        with self._lock:
            if line.finished:
                return
            line.finished = True
            self._lines.remove(line)
            if not self._lines:
                self._erase()
                self._hidden = False
            elif self._drawn:
                self._draw()  # its line must go now, not at the next throttled redraw

    # -- drawing (the lock is held) -----------------------------------------------------

    def _columns(self) -> int:
        if self._width is not None:
            return self._width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a real terminal (io.UnsupportedOperation too)
            columns = 0
        return columns or 80  # a fresh pty reports 0 columns until someone sets its size

    def _render(self) -> list[str]:
        lines = [line.text() for line in self._lines[:MAX_LINES]]
        rest = self._lines[MAX_LINES:]
        if rest:
            done = sum(line.done for line in rest)
            lines.append(f"... {len(rest)} more  {human_size(done)}")
        # A wrapped line would throw the count of lines to move up over off by one.
        width = max(self._columns() - 1, 10)
        return [text[:width] for text in lines]

    def _draw(self) -> None:
        if self._hidden or self._broken:
            return
        self._last = self._clock()
        lines = self._render()
        # Each line clears to its end rather than the whole line: on the first draw the
        # cursor is wherever the last log line left it, at the start of a fresh line.
        out = self._up() + "".join(f"{text}\x1b[K\n" for text in lines) + "\x1b[J"
        self._drawn = len(lines)
        self._write(out)

    def _erase(self) -> None:
        if self._drawn and not self._broken:
            self._write(self._up() + "\x1b[J")
        self._drawn = 0

    def _up(self) -> str:
        return f"\r\x1b[{self._drawn}A" if self._drawn else ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # closed or gone: the transfers themselves go on
            self._broken = True
            self._drawn = 0
