"""ENV and LABEL: ``key=value`` pairs (see ``instructions``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pybuildless.dockerfile.instructions import Instruction


@dataclass(frozen=True, kw_only=True)
class _Pairs(Instruction):
    # The kinds below only set ``keyword``: plain subclasses inherit the generated methods, which
    # look at the instance's own class (repr, eq, hash, replace), instead of generating their own.
    """An instruction made of KEY=value pairs (ENV, LABEL)."""

    pairs: tuple[tuple[str, str], ...]
    legacy: bool = False  # ``KEY value`` instead of ``KEY=value``

    def expand(self, env: Mapping[str, str]):  # noqa: ANN201 - returns the subclass
        # Same-instruction rule: every word sees the values from *before* this instruction.
        pairs = tuple((self._word(k, env), self._word(v, env)) for k, v in self.pairs)
        for key, _ in pairs:
            if not key:
                raise self.error(f"{self.keyword} names can not be blank")
        return replace(self, pairs=pairs)


class Env(_Pairs):
    """``ENV k=v ...`` (or legacy ``ENV k v w``)."""

    keyword = "ENV"


class Label(_Pairs):
    """``LABEL k=v ...``."""

    keyword = "LABEL"
