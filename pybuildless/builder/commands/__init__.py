"""One step class per instruction (``step_for``); each returns an Outcome (``commands.outcome``)
saying what it touched. The seam (``Step``, ``StepContext``) is in ``commands.step``."""

from __future__ import annotations

import importlib

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.step import StageState, Step, StepContext
from pybuildless.dockerfile import instructions as ins

__all__ = ["Outcome", "StageState", "Step", "StepContext", "step_for"]

# instruction -> (module of commands, step class). A step's module loads with the first instruction
# of its kind: a build without RUN never loads RUN's mounts, nor one without COPY/ADD the copier.
_STEPS: dict[type, tuple[str, str]] = {
    ins.Run: ("run", "RunStep"),
    ins.Copy: ("files", "CopyStep"),
    ins.Add: ("files", "AddStep"),
    ins.Workdir: ("workdir", "WorkdirStep"),
    ins.Env: ("metadata", "EnvStep"),
    ins.Arg: ("metadata", "ArgStep"),
    ins.Label: ("metadata", "LabelStep"),
    ins.Expose: ("metadata", "ExposeStep"),
    ins.Volume: ("metadata", "VolumeStep"),
    ins.User: ("metadata", "UserStep"),
    ins.Cmd: ("metadata", "CmdStep"),
    ins.Entrypoint: ("metadata", "EntrypointStep"),
    ins.Shell: ("metadata", "ShellStep"),
    ins.StopSignal: ("metadata", "StopSignalStep"),
    ins.Healthcheck: ("metadata", "HealthcheckStep"),
    ins.Onbuild: ("metadata", "OnbuildStep"),
    ins.Maintainer: ("metadata", "MaintainerStep"),
}


def step_for(instruction: ins.Instruction) -> Step:
    """The step that carries out ``instruction`` (already expanded by the stage's scope)."""
    where = _STEPS.get(type(instruction))
    if where is None:
        raise instruction.error(f"{instruction.keyword} is not supported")
    module, name = where
    kind = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return kind(instruction)
