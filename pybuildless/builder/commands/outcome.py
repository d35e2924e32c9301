"""What a step reports about what it did (``Outcome``).

``Outcome.snapshot`` False means metadata only (an ``empty_layer`` history
entry); True with ``paths`` lists what the step wrote (COPY, ADD, WORKDIR), so
only those are examined; True with ``paths=None`` asks for a walk of the whole
root (RUN), unless the RUN ran on an overlay and ``upper`` holds its changes.
A module of its own so the step modules can import it without importing the
package that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pybuildless.fs.changes import Changes


@dataclass(frozen=True)
class Outcome:
    """What one step did: its history entry and the changes its layer is made of."""

    created_by: str
    snapshot: bool = False
    paths: tuple[str, ...] | None = None
    comment: str | None = None
    # COPY --link: the layer is exactly this directory's tree, independent of the stage's files.
    layer_root: str | None = None
    # RUN on an overlay: the changes read from its upper dir (already on the root), and
    # the directories made before the step (a missing WORKDIR), which the upper dir lacks.
    upper: Changes | None = None
    made: tuple[str, ...] = ()
