"""USER, WORKDIR and STOPSIGNAL: one word each (see ``instructions``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pybuildless.dockerfile.instructions import Instruction


@dataclass(frozen=True, kw_only=True)
class _Single(Instruction):
    # The kinds below only set ``keyword``: plain subclasses inherit the generated methods, which
    # look at the instance's own class (repr, eq, hash, replace), instead of generating their own.
    """An instruction with one argument (USER, WORKDIR, STOPSIGNAL, ...)."""

    value: str

    def expand(self, env: Mapping[str, str]):  # noqa: ANN201 - returns the subclass
        return replace(self, value=self._word(self.value, env))


class User(_Single):
    """``USER name|uid[:group|gid]``: stored verbatim, resolved in the rootfs at RUN time."""

    keyword = "USER"


class Workdir(_Single):
    """``WORKDIR path``: relative paths join the previous WORKDIR (the executor's job)."""

    keyword = "WORKDIR"


class StopSignal(_Single):
    """``STOPSIGNAL SIGTERM|TERM|15``."""

    keyword = "STOPSIGNAL"
