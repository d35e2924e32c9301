"""`--chmod` values: octal (`0755`) or symbolic (`u=rwX,go=rX`, `+x`, `g=u`), as BuildKit accepts them."""

from __future__ import annotations

import re
import stat
from typing import Callable

from pybuildless.errors import BuildError

_CLAUSE = re.compile(r"^([ugoa]*)([-+=])([rwxXst]*|[ugo])$")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}

Chmod = Callable[[int, bool], int]


def parse_chmod(spec: str) -> Chmod:
    """A function (source_mode, is_dir) -> new permission bits (07777)."""
    if re.fullmatch(r"[0-7]{1,4}", spec):
        # An octal mode sets the permission bits only: setuid/setgid/sticky stay as the source
        # has them, and the value's own are dropped. fsutil copy/copy_linux.go@0834f99b7b85
        # copyFileInfo: m = (m &^ 0777) | (*c.mode & 0777) (the same in BuildKit to this day).
        value = int(spec, 8) & 0o777
        return lambda mode, is_dir: (stat.S_IMODE(mode) & ~0o777) | value
    clauses = []
    for part in spec.split(","):
        m = _CLAUSE.match(part)
        if not m:
            raise BuildError(f"invalid --chmod value {spec!r}: expected octal or symbolic mode")
        clauses.append(m.groups())

    def apply(mode: int, is_dir: bool) -> int:
        perm = stat.S_IMODE(mode)
        for who, op, what in clauses:
            targets = who.replace("a", "ugo") or "ugo"
            mask = 0
            for w in targets:
                mask |= _WHO_BITS[w]
            if what in ("u", "g", "o"):
                # copy another class's rwx onto the targets
                shift = {"u": 6, "g": 3, "o": 0}[what]
                rwx = (perm >> shift) & 0o7
                bits = 0
                for w in targets:
                    bits |= rwx << {"u": 6, "g": 3, "o": 0}[w]
            else:
                bits = 0
                for ch in what:
                    if ch == "X":
                        if is_dir or perm & 0o111:
                            bits |= 0o111
                    else:
                        bits |= _PERM[ch]
            bits &= mask
            if op == "+":
                perm |= bits
            elif op == "-":
                perm &= ~bits
            else:
                perm = (perm & ~mask) | bits
        return perm & 0o7777

    return apply
