"""One handler per instruction. Each returns an Outcome saying what it touched.

``Outcome.snapshot`` False means metadata only (an ``empty_layer`` history
entry); True with ``paths`` lists what the step wrote (COPY, ADD, WORKDIR), so
only those are examined; True with ``paths=None`` asks for a walk of the whole
root (RUN), unless the RUN ran on an overlay and ``upper`` holds its changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pybuildless.dockerfile import instructions as ins
from pybuildless.fs.changes import Changes


@dataclass(frozen=True)
class Outcome:
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


# Imported after Outcome exists: the handler modules import it from here.
from pybuildless.build.commands import files, metadata, run, workdir  # noqa: E402

HANDLERS: dict[type, object] = {
    ins.Run: run.run,
    ins.Copy: files.copy,
    ins.Add: files.add,
    ins.Workdir: workdir.workdir,
    ins.Env: metadata.env,
    ins.Arg: metadata.arg,
    ins.Label: metadata.label,
    ins.Expose: metadata.expose,
    ins.Volume: metadata.volume,
    ins.User: metadata.user,
    ins.Cmd: metadata.cmd,
    ins.Entrypoint: metadata.entrypoint,
    ins.Shell: metadata.shell,
    ins.StopSignal: metadata.stopsignal,
    ins.Healthcheck: metadata.healthcheck,
    ins.Onbuild: metadata.onbuild,
    ins.Maintainer: metadata.maintainer,
}

# What decides a filesystem step's result, for the layer cache; None = never cached.
KEY_PARTS: dict[type, object] = {
    ins.Run: run.key_parts,
    ins.Copy: files.copy_key_parts,
    ins.Add: files.add_key_parts,
    ins.Workdir: workdir.key_parts,
}

# Config changes of filesystem steps, applied on a cache hit too (the handler does not run then).
CONFIG_EFFECTS: dict[type, object] = {
    ins.Workdir: workdir.set_workdir,
}
