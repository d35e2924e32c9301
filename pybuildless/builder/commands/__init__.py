"""One step class per instruction (``step_for``); each returns an Outcome (``commands.outcome``)
saying what it touched. The seam (``Step``, ``StepContext``) is in ``commands.step``."""

from __future__ import annotations

import importlib

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.step import StageState, Step, StepContext
from pybuildless.dockerfile import instructions as ins

__all__ = ["Outcome", "StageState", "Step", "StepContext", "step_for"]

# instruction keyword -> (module of commands, step class). A step's module loads with the first
# instruction of its kind: a build without RUN never loads RUN's mounts, nor one without COPY/ADD the
# copier. Keyed by keyword, not class: naming the classes here would load every instruction module.
_STEPS: dict[str, tuple[str, str]] = {
    "RUN": ("run", "RunStep"),
    "COPY": ("files", "CopyStep"),
    "ADD": ("files", "AddStep"),
    "WORKDIR": ("workdir", "WorkdirStep"),
    "ENV": ("metadata", "EnvStep"),
    "ARG": ("metadata", "ArgStep"),
    "LABEL": ("metadata", "LabelStep"),
    "EXPOSE": ("metadata", "ExposeStep"),
    "VOLUME": ("metadata", "VolumeStep"),
    "USER": ("metadata", "UserStep"),
    "CMD": ("metadata", "CmdStep"),
    "ENTRYPOINT": ("metadata", "EntrypointStep"),
    "SHELL": ("metadata", "ShellStep"),
    "STOPSIGNAL": ("metadata", "StopSignalStep"),
    "HEALTHCHECK": ("metadata", "HealthcheckStep"),
    "ONBUILD": ("metadata", "OnbuildStep"),
    "MAINTAINER": ("metadata", "MaintainerStep"),
}


def step_for(instruction: ins.Instruction) -> Step:
    """The step that carries out ``instruction`` (already expanded by the stage's scope)."""
    where = _STEPS.get(instruction.keyword)
    if where is None:
        raise instruction.error(f"{instruction.keyword} is not supported")
    module, name = where
    kind = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return kind(instruction)
