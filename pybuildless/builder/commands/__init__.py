"""One handler per instruction. Each returns an Outcome (``commands.outcome``) saying what it touched."""

from __future__ import annotations

from pybuildless.builder.commands import files, metadata, run, workdir
from pybuildless.builder.commands.outcome import Outcome
from pybuildless.dockerfile import instructions as ins

__all__ = ["CONFIG_EFFECTS", "HANDLERS", "KEY_PARTS", "Outcome"]

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
