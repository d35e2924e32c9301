"""What the RUN steps of one build share: a sandbox per stage root, the ``--secret`` values
and the directory of ``RUN --mount=type=cache`` mounts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pybuildless.builder.options import BuildOptions
from pybuildless.errors import UsageError
from pybuildless.sandbox import open_sandbox
from pybuildless.sandbox.base import Sandbox
from pybuildless.store.layers import default_root


@dataclass(frozen=True)
class Secrets:
    """``--secret id=ID,src=PATH`` and ``--secret id=ID,env=VAR``, read when a step asks."""

    specs: tuple[tuple[str, str, str], ...] = ()  # (id, "src"|"env", path or variable name)

    def get(self, ident: str) -> bytes | None:
        for sid, kind, value in self.specs:
            if sid != ident:
                continue
            if kind == "env":
                return os.environ[value].encode() if value in os.environ else None
            try:
                return Path(value).read_bytes()
            except OSError as e:
                raise UsageError(f"--secret id={ident}: cannot read {value}: {e.strerror}") from None
        return None


def run_cache_dir(options: BuildOptions) -> Path:
    """Where RUN --mount=type=cache directories live: kept between builds, never in an image
    (made when a step first uses one)."""
    if options.cache_dir is not None:
        return Path(options.cache_dir) / "run-mounts"
    if options.in_place:
        return Path(options.kaniko_dir) / "cache" / "run-mounts"
    # default_root never raises: the executor image has no home directory (no $HOME, no passwd
    # entry), where Path.home() would, and this runs for every build, not only cache mounts.
    return default_root() / "run-mounts"


class Sandboxes:
    """One sandbox per stage root, opened by the first RUN of that stage, all closed at the end."""

    def __init__(self, isolation: str, *, scratch_parent: Path, overlay: bool) -> None:
        self._isolation = isolation
        self._scratch_parent = scratch_parent
        self._overlay = overlay
        self._open: dict[Path, Sandbox] = {}

    def for_root(self, root: Path) -> Sandbox:
        if root not in self._open:
            self._open[root] = open_sandbox(self._isolation, root, scratch_parent=self._scratch_parent,
                                            overlay=self._overlay)
        return self._open[root]

    def close(self) -> None:
        for sandbox in self._open.values():
            sandbox.close()
        self._open.clear()
