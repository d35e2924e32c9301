"""The Dockerfile lines around an error, laid out as BuildKit prints them.

BuildKit's rule (moby/buildkit solver/errdefs/source.go ``Source.Print``, eeb7b65ab7d6 as in Docker 20.10):
the header ``NAME:LINE`` names the first line of the failing range; up to 4 lines of context
are added around a one-line range (2 around a longer one), taking one line before and one
after in turn while there are any; each line is `` %3d | PFX TEXT`` where PFX is ``>>>`` on
the failing lines and three blanks elsewhere; dashed rules above and below.
"""

from __future__ import annotations

import posixpath

RULE = "-" * 20


def excerpt(text: str, name: str, start: int, end: int | None = None) -> list[str]:
    """The printed lines (header, rules, numbered lines); [] when ``start`` is not in ``text``."""
    lines = text.split("\n")
    end = start if end is None or end < start else end
    if start < 1 or start > len(lines):
        return []
    end = min(end, len(lines))
    first, last = start, end
    pad = 4 if start == end else 2
    taken = 0
    while taken < pad:
        if first > 1:
            first -= 1
            taken += 1
        if last != len(lines):
            last += 1
            taken += 1
        taken += 1
    out = [f"{posixpath.basename(name) or name}:{start}", RULE]
    for number in range(first, last + 1):
        marker = ">>>" if start <= number <= end else "   "
        out.append(f" {number:3d} | {marker} {lines[number - 1]}")
    out.append(RULE)
    return out
