"""One step class per instruction (``step_for``); each returns an Outcome (``commands.outcome``)
saying what it touched. The seam (``Step``, ``StepContext``) is in ``commands.step``."""

from __future__ import annotations

from pybuildless.builder.commands.files import AddStep, CopyStep
from pybuildless.builder.commands.metadata import (
    ArgStep, CmdStep, EntrypointStep, EnvStep, ExposeStep, HealthcheckStep, LabelStep, MaintainerStep, OnbuildStep,
    ShellStep, StopSignalStep, UserStep, VolumeStep,
)
from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.run import RunStep
from pybuildless.builder.commands.step import StageState, Step, StepContext
from pybuildless.builder.commands.workdir import WorkdirStep
from pybuildless.dockerfile import instructions as ins

__all__ = ["Outcome", "StageState", "Step", "StepContext", "step_for"]

_STEPS: dict[type, type] = {
    ins.Run: RunStep,
    ins.Copy: CopyStep,
    ins.Add: AddStep,
    ins.Workdir: WorkdirStep,
    ins.Env: EnvStep,
    ins.Arg: ArgStep,
    ins.Label: LabelStep,
    ins.Expose: ExposeStep,
    ins.Volume: VolumeStep,
    ins.User: UserStep,
    ins.Cmd: CmdStep,
    ins.Entrypoint: EntrypointStep,
    ins.Shell: ShellStep,
    ins.StopSignal: StopSignalStep,
    ins.Healthcheck: HealthcheckStep,
    ins.Onbuild: OnbuildStep,
    ins.Maintainer: MaintainerStep,
}


def step_for(instruction: ins.Instruction) -> Step:
    """The step that carries out ``instruction`` (already expanded by the stage's scope)."""
    kind = _STEPS.get(type(instruction))
    if kind is None:
        raise instruction.error(f"{instruction.keyword} is not supported")
    return kind(instruction)
