"""What a build prints: `docker build`-like step lines, timings and layer sizes.

Step lines go through the ``pybuildless.builder`` logger (stderr; text, color or
JSON as configured by ``pybuildless.log``); RUN output goes to stdout as is.
"""

from __future__ import annotations

import logging
import sys
import threading

from pybuildless import transfer
from pybuildless.transfer import human_size

log = logging.getLogger("pybuildless.builder")


class Progress:
    """Step lines to the log, RUN output to stdout, as they happen."""

    def _emit(self, level: int, message: str, *args) -> None:
        log.log(level, message, *args)

    def output(self, chunk: bytes) -> None:
        out = sys.stdout.buffer
        # Background cache pushes may be showing live lines on the same terminal; output
        # that stops mid-line keeps them hidden (redrawing would glue them to it).
        with transfer.paused(redraw=chunk.endswith(b"\n")):
            out.write(chunk)
            out.flush()

    def step(self, stage: tuple[int, int], step: tuple[int, int], text: str) -> None:
        first_line = text.splitlines()[0] if text else ""
        self._emit(logging.INFO, "[stage %d/%d] STEP %d/%d: %s", stage[0], stage[1], step[0], step[1], first_line)

    def done(self, elapsed: float, layer, *, cached: bool = False) -> None:
        how = "from cache" if cached else f"done in {elapsed:.2f}s"
        if layer is None:
            self._emit(logging.INFO if cached else logging.DEBUG, "  %s, no layer", how)
        else:
            self._emit(logging.INFO, "  %s, layer %s (%s)", how, str(layer.digest)[:19], human_size(layer.size))

    def info(self, message: str) -> None:
        self._emit(logging.INFO, "%s", message)

    def warn(self, message: str) -> None:
        self._emit(logging.WARNING, "%s", message)


class BufferedProgress(Progress):
    """For a stage built in parallel with others: everything is kept and replayed in
    stage order once the stages of its level are done, so output never interleaves."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.lock = threading.Lock()

    def _emit(self, level: int, message: str, *args) -> None:
        with self.lock:
            self.events.append(("log", level, message, args))

    def output(self, chunk: bytes) -> None:
        with self.lock:
            self.events.append(("out", chunk))

    def replay(self, into: Progress) -> None:
        for event in self.events:
            if event[0] == "log":
                into._emit(event[1], event[2], *event[3])
            else:
                into.output(event[1])
        self.events.clear()
