"""What a build prints: `docker build`-like step lines, timings and layer sizes.

Step lines go through the ``pybuildless.build`` logger (stderr; text, color or
JSON as configured by ``pybuildless.log``); RUN output goes to stdout as is.
"""

from __future__ import annotations

import logging

log = logging.getLogger("pybuildless.build")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{n}B"


class Progress:
    def step(self, stage: tuple[int, int], step: tuple[int, int], text: str) -> None:
        first_line = text.splitlines()[0] if text else ""
        log.info("[stage %d/%d] STEP %d/%d: %s", stage[0], stage[1], step[0], step[1], first_line)

    def done(self, elapsed: float, layer, *, cached: bool = False) -> None:
        how = "from cache" if cached else f"done in {elapsed:.2f}s"
        if layer is None:
            (log.info if cached else log.debug)("  %s, no layer", how)
        else:
            log.info("  %s, layer %s (%s)", how, str(layer.digest)[:19], human_size(layer.size))

    def info(self, message: str) -> None:
        log.info("%s", message)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
