"""How RUN executes: the Sandbox seam and its isolations.

``open_sandbox(kind, root)`` picks one:

* ``chroot``: chroot into the stage root, private mount/pid/IPC/UTS
  namespaces when permitted (needs root);
* ``inplace``: run in the builder's own root, Kaniko style (root must be /);
* ``userns``: rootless: the chroot isolation inside the user namespace the
  builder re-executed itself in (``userns.maybe_reexec``, called at startup);
* ``auto``: chroot when running as root (or inside that namespace).

``Sandbox.run(argv, env=, cwd=, user=, stdout=, network=, mounts=)`` returns
a ``RunResult``: the exit status (128+n when killed by signal n) and the step's
changes when it ran on an overlay; ``mounts`` takes ``Mount``
values (host bind mounts and tmpfs, the seam for ``RUN --mount``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pybuildless.errors import SandboxError
from pybuildless.lazyexports import lazy_exports

if TYPE_CHECKING:
    from pybuildless.sandbox.base import Sandbox

# Loaded on first use: the isolation is picked (userns) and RUN mounts are described (extra_mounts)
# before any step runs, and a build without RUN never loads the sandboxes and their seccomp tables.
__getattr__, __dir__ = lazy_exports(__name__, {
    "NETWORK_MODES": "base", "Sandbox": "base", "Sink": "base",
    "ChrootSandbox": "chroot",
    "Mount": "extra_mounts",
    "InPlaceSandbox": "inplace",
    "CommandNotFoundError": "process",
    "UsernsUnavailableError": "userns", "in_reexecuted_namespace": "userns", "maybe_reexec": "userns",
})

ISOLATIONS = ("auto", "chroot", "inplace", "userns")

__all__ = [
    "ChrootSandbox", "CommandNotFoundError", "ISOLATIONS", "InPlaceSandbox", "Mount", "NETWORK_MODES", "Sandbox",
    "Sink", "UsernsUnavailableError", "maybe_reexec", "open_sandbox",
]


def open_sandbox(kind: str, root: Path, **options: object) -> Sandbox:
    """The sandbox for ``--isolation=kind`` running RUN steps against ``root``.

    Extra ``options`` go to the sandbox's constructor (e.g. ``namespaces=False``).
    """
    from pybuildless.sandbox.userns import in_reexecuted_namespace

    if kind == "auto":
        if os.geteuid() != 0:
            raise SandboxError(
                "--isolation=auto: not running as root and not inside the builder's user namespace "
                "(pybuildless.sandbox.userns.maybe_reexec was not called at startup)")
        kind = "userns" if in_reexecuted_namespace() else "chroot"
    if kind == "chroot":
        from pybuildless.sandbox.chroot import ChrootSandbox

        return ChrootSandbox(root, **options)  # type: ignore[arg-type]
    if kind == "inplace":
        options.pop("overlay", None)  # RUN writes straight into / there: nothing to mount over
        if os.path.abspath(root) != "/":
            raise SandboxError(f"--isolation=inplace runs RUN in the builder's own root, but the stage root is {root}")
        from pybuildless.sandbox.inplace import InPlaceSandbox

        return InPlaceSandbox(**options)  # type: ignore[arg-type]
    if kind == "userns":
        if not in_reexecuted_namespace():
            raise SandboxError("--isolation=userns: this process is not inside the builder's user namespace "
                               "(pybuildless.sandbox.userns.maybe_reexec must run at startup)")
        # uid 0 with all capabilities over the namespace: the chroot isolation works as for root.
        from pybuildless.sandbox.chroot import ChrootSandbox

        return ChrootSandbox(root, **options)  # type: ignore[arg-type]
    raise SandboxError(f"--isolation={kind}: unknown isolation (expected one of {', '.join(ISOLATIONS)})")
