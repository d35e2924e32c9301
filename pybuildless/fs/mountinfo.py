"""Mount points of this process's mount namespace, read from ``/proc/self/mountinfo``.

One line per mount; the fifth field is the mount point, with space, tab, newline and
backslash written as ``\\ooo`` octal escapes (proc(5), fs/proc_namespace.c ``mangle``).
Other bytes come through as they are, so the text is read with ``surrogateescape`` and
the paths go back to the kernel unchanged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    r"""``/a\040b`` -> ``/a b``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[str]:
    """Mount points (field 5) of a ``/proc/<pid>/mountinfo`` text, in order, escapes decoded."""
    points: list[str] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            points.append(unescape(fields[4]))
    return points


def mount_points(path: str | Path = MOUNTINFO) -> list[str]:
    """The mount points listed in ``path``; raises OSError when it cannot be read."""
    return parse_mountinfo(Path(path).read_text(encoding="utf-8", errors="surrogateescape"))


def mounts_below(root: str | Path) -> list[str]:
    """Mount points strictly below ``root`` in this process's mount namespace."""
    prefix = os.path.abspath(root).rstrip("/") + "/"
    return [point for point in mount_points() if point.startswith(prefix)]
